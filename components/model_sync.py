"""Model delivery into the serving pods: the model-sync init container and sidecar, the
versions each pod should hold, and the shell scripts they run (components/scripts/).

It builds container specs and ConfigMap data only; it creates no resource and knows nothing
of the bucket's own settings or IAM (components/model_store.py owns those).

TF Serving images from 2.7 on cannot read `s3://` paths, so models reach the pods through
a pod volume: the init container syncs the configured versions before TF Serving starts, and
the sidecar keeps syncing. A version becomes visible only once complete: the publisher writes
a checksum manifest last (see model_layout.py); the sync downloads into a staging folder,
verifies every checksum and then renames the folder into place, which is atomic on one
filesystem, so TF Serving never sees half a version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from components import catalog
from components.config import ModelConfig
from components.images import Image
from components.model_layout import COMPLETE_DIR
from components.podsecurity import restricted_container

# AWS CLI v2 (Pod Identity credentials need >= 2.15), on ECR Public to avoid pull limits.
SYNC_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.34.48"
# Above 10000, like the server's (CIS 5.2.6; checkov CKV_K8S_40).
SYNC_UID = 10001
SYNC_INTERVAL_SECONDS = 30
MODELS_FILE = "/etc/model-sync/models.txt"
SYNC_SCRIPT = "/etc/model-sync/sync.sh"
READY_SCRIPT = "/etc/model-sync/ready.sh"
# EKS Pod Identity agent, on every node (link-local): where the sync gets its credentials.
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"

SCRIPTS = Path(__file__).parent / "scripts"
SYNC_SH = (SCRIPTS / "model-sync.sh").read_text().replace("__COMPLETE_DIR__", COMPLETE_DIR)
READY_SH = (SCRIPTS / "model-ready.sh").read_text()


def sync_image() -> Image:
    registry, _, rest = SYNC_IMAGE.partition("/")
    repository, _, tag = rest.rpartition(":")
    return Image(registry, repository, tag)


@dataclass(frozen=True)
class ModelSync:
    """Which versions of one model the pods should hold."""

    policy: Literal["latest", "specific"]
    latest_count: int = 1
    versions: tuple[int, ...] = ()

    def line(self, model: str) -> str:
        arg = str(self.latest_count) if self.policy == "latest" else ",".join(map(str, self.versions))
        return f"{model} {self.policy} {arg}"


def model_sync_specs(models: Mapping[str, ModelConfig]) -> dict[str, ModelSync]:
    return {
        name: ModelSync(m.version_policy, m.latest_count, tuple(sorted(m.versions)))
        for name, m in models.items()
    }


def models_file(models: Mapping[str, ModelSync]) -> str:
    return "".join(f"{spec.line(name)}\n" for name, spec in sorted(models.items()))


def sync_config_data(models: Mapping[str, ModelSync]) -> dict[str, str]:
    """Contents of the ConfigMap mounted at /etc/model-sync."""
    return {"sync.sh": SYNC_SH, "ready.sh": READY_SH, "models.txt": models_file(models)}


def model_sync_containers(
    *,
    image: str,
    bucket: pulumi.Input[str],
    prefix: str,
    region: str,
    model_root: str,
    model_volume: str,
    config_volume: str,
    tmp_volume: str,
    rest_port: int,
    cache_volume: str | None = None,
    cache_mount: str = "",
    cache_env: Sequence[k8s.core.v1.EnvVarArgs] = (),
) -> tuple[k8s.core.v1.ContainerArgs, k8s.core.v1.ContainerArgs]:
    """The init container (one pass before TF Serving starts) and the native sidecar (loops).

    The sidecar is an init container with `restartPolicy: Always`: it starts before TF
    Serving, runs beside it, and does not keep the pod alive on its own.
    """

    def container(name: str, args: list[str], sidecar: bool) -> k8s.core.v1.ContainerArgs:
        return k8s.core.v1.ContainerArgs(
            name=name,
            image=image,
            command=["/bin/bash"],
            args=[SYNC_SCRIPT, *args],
            restart_policy="Always" if sidecar else None,
            env=[
                k8s.core.v1.EnvVarArgs(name="MODEL_BUCKET", value=bucket),
                k8s.core.v1.EnvVarArgs(name="MODEL_PREFIX", value=prefix),
                k8s.core.v1.EnvVarArgs(name="MODEL_ROOT", value=model_root),
                k8s.core.v1.EnvVarArgs(name="MODELS_FILE", value=MODELS_FILE),
                k8s.core.v1.EnvVarArgs(name="SYNC_INTERVAL_SECONDS", value=str(SYNC_INTERVAL_SECONDS)),
                # The region is given, never looked up: pods cannot reach IMDS (hop limit 1).
                # CLI v2 reads AWS_REGION, v1 and older SDKs AWS_DEFAULT_REGION.
                k8s.core.v1.EnvVarArgs(name="AWS_REGION", value=region),
                k8s.core.v1.EnvVarArgs(name="AWS_DEFAULT_REGION", value=region),
                # No pager: CLI v2 pipes output through `less` by default (AWS CLI v2 user
                # guide, "Using AWS CLI pagination options": client-side pager).
                k8s.core.v1.EnvVarArgs(name="AWS_PAGER", value=""),
                # The image's root filesystem is read-only; the CLI keeps its state in /tmp.
                k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
                k8s.core.v1.EnvVarArgs(name="REST_PORT", value=str(rest_port)),
                *cache_env,
            ],
            # The sidecar gates pod readiness: every configured model must be AVAILABLE.
            readiness_probe=k8s.core.v1.ProbeArgs(
                exec_=k8s.core.v1.ExecActionArgs(command=["/bin/bash", READY_SCRIPT]),
                period_seconds=10,
                timeout_seconds=5,
                failure_threshold=3,
            )
            if sidecar
            else None,
            volume_mounts=[
                k8s.core.v1.VolumeMountArgs(name=model_volume, mount_path=model_root),
                k8s.core.v1.VolumeMountArgs(name=config_volume, mount_path="/etc/model-sync", read_only=True),
                k8s.core.v1.VolumeMountArgs(name=tmp_volume, mount_path="/tmp"),
                # The node-local model cache (components/model_cache.py), when the stack has one.
                *([k8s.core.v1.VolumeMountArgs(name=cache_volume, mount_path=cache_mount)] if cache_volume else []),
            ],
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests=dict(catalog.MODEL_SYNC_RESOURCES["requests"]),
                limits=dict(catalog.MODEL_SYNC_RESOURCES["limits"]),
            ),
            security_context=restricted_container(SYNC_UID),
        )

    return (
        container("model-sync-init", ["--once"], sidecar=False),
        container("model-sync", [], sidecar=True),
    )
