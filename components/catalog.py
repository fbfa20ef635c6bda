"""Facts the program reasons with: Kubernetes versions, add-on pins, instance types.

Sources (checked 2026-11):
- EKS Kubernetes versions: EKS user guide, "Understand the Kubernetes version lifecycle on
  EKS" (1.34 standard support ends 2026-12-02, 1.35 on 2027-03-27, 1.36 on 2027-08-02).
- kube-proxy and coredns builds: EKS user guide tables "latest version per Kubernetes
  version" (managing-kube-proxy, managing-coredns).
- vpc-cni, eks-pod-identity-agent, aws-ebs-csi-driver: `aws eks describe-addon-versions`
  results for these Kubernetes versions. Re-check with
  `aws eks describe-addon-versions --addon-name NAME --kubernetes-version X.Y` before
  moving a pin; `cluster.addons.*` overrides any of them per stack.
"""

from __future__ import annotations

from typing import Literal

KubernetesVersion = Literal["1.34", "1.35", "1.36"]
DEFAULT_KUBERNETES_VERSION: KubernetesVersion = "1.36"

AddonName = Literal[
    "vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver"
]

_SHARED_ADDONS: dict[AddonName, str] = {
    # Network policy enforcement needs >= v1.14; admin network policies >= v1.21.
    "vpc-cni": "v1.22.4-eksbuild.3",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.3",
    "aws-ebs-csi-driver": "v1.66.0-eksbuild.1",
}

ADDON_VERSIONS: dict[KubernetesVersion, dict[AddonName, str]] = {
    "1.34": {
        **_SHARED_ADDONS,
        "coredns": "v1.13.2-eksbuild.11",
        "kube-proxy": "v1.34.6-eksbuild.13",
    },
    "1.35": {
        **_SHARED_ADDONS,
        "coredns": "v1.14.3-eksbuild.3",
        "kube-proxy": "v1.35.3-eksbuild.13",
    },
    "1.36": {
        **_SHARED_ADDONS,
        "coredns": "v1.14.3-eksbuild.3",
        "kube-proxy": "v1.36.0-eksbuild.14",
    },
}
