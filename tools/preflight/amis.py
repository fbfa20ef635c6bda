"""Preflight check that the AMI each Karpenter pool pins by alias is published for the
stack's Kubernetes version in its region: Karpenter resolves an alias through a public SSM
parameter and launches nothing when the parameter is missing ("failed to discover any AMIs
for alias"), so a pool whose pinned release does not exist stays at zero nodes.

The parameter names are Karpenter v1.14.1's (karpenter-provider-aws pkg/providers/amifamily/
al2023.go resolvePath and bottlerocket.go DescribeImageQuery, NVIDIA variant, x86_64). It
reads one parameter per pool; it must not pick an AMI or change the pins (catalog.py does)."""

from __future__ import annotations

from components import catalog
from components.config import GpuPoolConfig
from tools.preflight.aws_errors import CouldNotCheck, guarded
from tools.preflight.eks import stack_version
from tools.preflight.model import Context, Finding


def ssm_parameter(alias: str, kubernetes_version: str) -> str:
    """The public SSM parameter Karpenter reads the image ID of a pinned NVIDIA alias from."""
    family, _, version = alias.partition("@")
    if family == "al2023":
        name = f"amazon-eks-node-al2023-x86_64-nvidia-{kubernetes_version}-{version}"
        return f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/x86_64/nvidia/{name}/image_id"
    if family == "bottlerocket":
        # Bottlerocket's SSM paths have no leading v (bottlerocket.go trims it).
        return f"/aws/service/bottlerocket/aws-k8s-{kubernetes_version}-nvidia/x86_64/{version.lstrip('v')}/image_id"
    raise ValueError(f"no SSM path known for AMI alias {alias}")


def _pool_finding(ctx: Context, name: str, pool: GpuPoolConfig, version: str) -> Finding:
    alias = catalog.KARPENTER_AMI_ALIASES[pool.ami_type]
    parameter = ssm_parameter(alias, version)
    check = f"Karpenter AMI published: gpu_pools.{name}"
    needs = f"{alias} for Kubernetes {version} in {ctx.region} (SSM {parameter})"
    ssm = ctx.client("ssm")  # type: ignore[misc]
    try:
        found = guarded(check, needs, "ssm:GetParameter", lambda: ssm.get_parameter(Name=parameter),
                        missing=("ParameterNotFound",))
    except CouldNotCheck as exc:
        return exc.finding
    if found is None:
        return Finding(
            check, needs, "not published: Karpenter would launch no node for this pool", "fail",
            f"pin a published release in catalog.KARPENTER_AMI_ALIASES (list them: aws ssm "
            f"get-parameters-by-path --path {parameter.rsplit('/', 2)[0]} --region {ctx.region}), "
            f"or change cluster.kubernetes_version",
        )
    return Finding(check, needs, f"published: {found['Parameter']['Value']}", "pass")


def checks(ctx: Context) -> list[Finding]:
    pools = ctx.config.karpenter_pools
    if not ctx.online or not pools:
        return []
    try:
        version = stack_version(ctx)
    except CouldNotCheck:
        return []  # the EKS check reports the cluster it could not read
    if version is None:
        return []  # mode existing without a cluster: tools/preflight/existing.py reports it
    return [_pool_finding(ctx, name, ctx.config.gpu_pools[name], version) for name in pools]
