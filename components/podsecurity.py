"""Pod Security for our workloads: the container security every container of ours gets
(`restricted`), and namespaces labelled with the Pod Security Standard their pods are held to.

It decides security settings only; it must not pick a namespace's level for a component (each
component states its own, with the reason) nor create anything but the namespace.
"""

from __future__ import annotations

from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from components.naming import k8s_labels

PodSecurityLevel = Literal["privileged", "baseline", "restricted"]
POD_SECURITY_LABEL = "pod-security.kubernetes.io"


def restricted_container(uid: int) -> k8s.core.v1.SecurityContextArgs:
    """Non-root, read-only root filesystem, no capabilities, no escalation, default seccomp."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_security_labels(level: PodSecurityLevel) -> dict[str, str]:
    """Pod Security admission labels: `level` enforced; below `privileged` also audited and
    warned at the same level, so a pod that would break it is reported by every mode. At
    `privileged` audit and warn would never report anything, so they are left out."""
    modes = ("enforce",) if level == "privileged" else ("enforce", "audit", "warn")
    return {f"{POD_SECURITY_LABEL}/{mode}": level for mode in modes}


def namespace(
    resource_name: str,
    name: str,
    *,
    component: str,
    level: PodSecurityLevel,
    opts: pulumi.ResourceOptions,
) -> k8s.core.v1.Namespace:
    """The namespace `name`, with our `app.kubernetes.io/*` labels for `component` and the
    Pod Security level its pods are held to."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name, labels={**k8s_labels(component, name), **pod_security_labels(level)}
        ),
        opts=opts,
    )
