"""The node-local model cache (`serving.model_cache`): each model version crosses from S3
once per node, not once per pod, and the serving pods of a node (stable and canary alike)
copy their versions from it.

Design, and why:

- Where. A folder on the node: on the instance store when the serving pool has
  `instance_store: raid0` (nodeadm stripes the NVMe disks into one array mounted at
  /mnt/k8s-disks/0 and bind-mounts the kubelet's and containerd's folders onto it:
  amazon-eks-ami templates/al2023/runtime/bin/setup-local-disks), else on the node's EBS root
  volume under /var/lib. Either way it is the disk the pods' emptyDir volumes live on.

- How pods reach it without hostPath. The serving namespace stays Pod Security `restricted`,
  which forbids hostPath volumes (as `baseline` does) but allows persistentVolumeClaim. The
  stack makes one cluster-scoped `local` PersistentVolume naming the folder, with node
  affinity to every node of the serving pool, pre-bound to one claim in the serving
  namespace that every serving pod mounts: the KServe LocalModelCache pattern
  (kserve/website docs/modelserving/storage/modelcache/localmodel.md). A `local` volume is a
  bind mount of the path on whichever node the pod runs on (kubernetes pkg/volume/local
  local.go), so one claim is a different folder on each node; nothing attaches it, so its
  ReadWriteOnce ("how many nodes can attach to it", ibid., GetAccessModes) limits nothing
  here. Only cluster administrators create PersistentVolumes, so a namespace user still cannot
  name a host path; the path is fixed by this module.

- Who makes the folder. A `local` volume must exist before it is mounted, and nodeadm sets up
  the RAID0 array in its run phase, after cloud-init's user scripts
  (nodeadm/cmd/nodeadm/init/init.go runs the local-disk aspect in the run phase;
  nodeadm-run.service is After=cloud-final.service), so user data cannot make it. A tiny
  DaemonSet on the pool's nodes mounts the folder as a hostPath of type DirectoryOrCreate,
  read-only, which makes the kubelet create it; its container does nothing else (non-root,
  read-only root filesystem, no capabilities). It is the one hostPath of the stack, in a
  namespace of its own at Pod Security `privileged` (no lower level admits hostPath), with
  no service account token and no API access. A serving pod that lands on a node before the
  folder exists waits in ContainerCreating until the kubelet's mount retry finds it.

- Ownership. The kubelet applies the pod's fsGroup to a `local` volume mounted read-write
  (local.go SetUpAt -> SetVolumeOwnership), so the root-owned folder becomes writable by
  group 10001 with the setgid bit; `fsGroupChangePolicy: OnRootMismatch` keeps the kubelet
  from walking a multi-GB cache on every mount once the folder's root is right.

- Copy, not link. Pods copy a cached version into their own emptyDir and check it against
  the manifest before the rename into place: the pod volume and the cache are different
  mounts (link(2) fails with EXDEV across mounts), and a pod's served files must not depend
  on the cache keeping them: an eviction, a cache wiped by hand or a damaged copy never
  unloads a version from TF Serving. Unloading stays as it was, the pod's own folder going.
  The cost is the disk of one more copy per pod (counted by the disk rule in
  components/config/stack.py); the gain is a node-local copy at disk speed instead of an S3
  download.

- The protocol (fill locks, leases, LRU eviction, fallback to S3) is in the sync script,
  components/scripts/model-sync.sh; this module gives it its environment and volume.

Rejected: a generic ephemeral volume (one per pod, no sharing); hostPath in the serving pods
(the serving namespace would drop to `privileged`); a node daemon serving models over HTTP
(a server of ours, its image and its port, for what a shared folder does); a CSI driver
(a third-party node plugin, privileged itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import catalog
from components.config import GpuPoolConfig, ModelCacheConfig
from components.gpu_pools import GpuScheduling
from components.model_sync import SYNC_INTERVAL_SECONDS, SYNC_UID, sync_image
from components.images import pinned
from components.naming import k8s_labels
from components import podsecurity
from components.podsecurity import restricted_container

CACHE_MOUNT = "/model-cache"
VOLUME_NAME = "model-cache"
HOST_DIR_NAME = "tf-serving-model-cache"
# nodeadm's RAID0 array (setup-local-disks: MNT_DIR=/mnt/k8s-disks, the array at ${MNT_DIR}/0).
INSTANCE_STORE_MOUNT = "/mnt/k8s-disks/0"
# On the EBS root volume of an AL2023 node (the volume of gpu_pools.<pool>.disk_size_gib).
ROOT_VOLUME_DIR = "/var/lib"
# A pod's lease on a version counts while refreshed within this many sync passes.
LEASE_STALE_PASSES = 4
HOST_DIR_RESOURCES = catalog.MODEL_CACHE_DIR_RESOURCES


def host_path(pool: GpuPoolConfig) -> str:
    """The cache folder on the pool's nodes."""
    base = INSTANCE_STORE_MOUNT if pool.instance_store == "raid0" else ROOT_VOLUME_DIR
    return f"{base}/{HOST_DIR_NAME}"


def max_kib(cache: ModelCacheConfig) -> int:
    return cache.size_gib * 1024 * 1024


def node_namespace(serving_namespace: str) -> str:
    """The namespace of the folder-making DaemonSet (privileged): only that DaemonSet."""
    return f"{serving_namespace}-node-cache"


# One volume, claim and folder-maker per pool: the cache is the pool's nodes', so moving
# serving.gpu_pool gives the new pods a new claim (the Deployment rolls over to it, and the
# old claim goes once its pods have: Kubernetes' pvc-protection finalizer) rather than
# changing a bound volume's node affinity, which Kubernetes does not allow.
def claim_name(pool_name: str) -> str:
    return f"model-cache-{pool_name}"


def volume_name(serving_namespace: str, pool_name: str) -> str:
    """The PersistentVolume (cluster-scoped: named after the serving namespace it serves)."""
    return f"{serving_namespace}-model-cache-{pool_name}"


def host_dir_name(pool_name: str) -> str:
    return f"{HOST_DIR_NAME}-{pool_name}"


def sync_env(cache: ModelCacheConfig) -> list[k8s.core.v1.EnvVarArgs]:
    """What the sync containers need to use the cache (components/scripts/model-sync.sh)."""
    return [
        k8s.core.v1.EnvVarArgs(name="MODEL_CACHE", value=CACHE_MOUNT),
        k8s.core.v1.EnvVarArgs(name="MODEL_CACHE_MAX_KIB", value=str(max_kib(cache))),
        k8s.core.v1.EnvVarArgs(name="PIN_STALE_SECONDS", value=str(LEASE_STALE_PASSES * SYNC_INTERVAL_SECONDS)),
        # Leases and lock owners are named after the pod: unique on the node, and readable.
        k8s.core.v1.EnvVarArgs(
            name="POD_NAME",
            value_from=k8s.core.v1.EnvVarSourceArgs(
                field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="metadata.name")
            ),
        ),
    ]


def node_affinity(scheduling: GpuScheduling) -> k8s.core.v1.VolumeNodeAffinityArgs:
    """Every node the serving pods may land on: the pool's own node selector."""
    return k8s.core.v1.VolumeNodeAffinityArgs(
        required=k8s.core.v1.NodeSelectorArgs(
            node_selector_terms=[
                k8s.core.v1.NodeSelectorTermArgs(
                    match_expressions=[
                        k8s.core.v1.NodeSelectorRequirementArgs(key=key, operator="In", values=[value])
                        for key, value in sorted(scheduling.node_selector.items())
                    ]
                )
            ]
        )
    )


def persistent_volume_spec(
    cache: ModelCacheConfig, path: str, scheduling: GpuScheduling, serving_namespace: str, pool_name: str
) -> k8s.core.v1.PersistentVolumeSpecArgs:
    return k8s.core.v1.PersistentVolumeSpecArgs(
        capacity={"storage": f"{cache.size_gib}Gi"},
        access_modes=["ReadWriteOnce"],
        volume_mode="Filesystem",
        # Never recycled or deleted by Kubernetes: the folders are the nodes' (and go with them).
        persistent_volume_reclaim_policy="Retain",
        storage_class_name="",
        local=k8s.core.v1.LocalVolumeSourceArgs(path=path),
        node_affinity=node_affinity(scheduling),
        # Pre-bound both ways: no other claim can take it, and no provisioner is asked.
        claim_ref=k8s.core.v1.ObjectReferenceArgs(namespace=serving_namespace, name=claim_name(pool_name)),
    )


def claim_spec(
    cache: ModelCacheConfig, serving_namespace: str, pool_name: str
) -> k8s.core.v1.PersistentVolumeClaimSpecArgs:
    return k8s.core.v1.PersistentVolumeClaimSpecArgs(
        access_modes=["ReadWriteOnce"],
        # "" and not unset: the default StorageClass must not provision a volume for it.
        storage_class_name="",
        volume_name=volume_name(serving_namespace, pool_name),
        resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": f"{cache.size_gib}Gi"}),
    )


def host_dir_pod_spec(path: str, scheduling: GpuScheduling, image: str) -> k8s.core.v1.PodSpecArgs:
    """The folder-maker: its hostPath volume of type DirectoryOrCreate makes the kubelet create
    the folder; the container only keeps the pod (and so the folder's mount) alive."""
    return k8s.core.v1.PodSpecArgs(
        automount_service_account_token=False,
        security_context=k8s.core.v1.PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=SYNC_UID,
            run_as_group=SYNC_UID,
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        node_selector=scheduling.node_selector,
        tolerations=[
            k8s.core.v1.TolerationArgs(key=t["key"], operator=t["operator"], value=t["value"], effect=t["effect"])
            for t in scheduling.tolerations
        ],
        containers=[
            k8s.core.v1.ContainerArgs(
                name="host-dir",
                # The sync image: every node of the pool pulls it for the serving pods anyway.
                image=image,
                image_pull_policy="IfNotPresent",
                command=["/bin/sleep", "infinity"],
                volume_mounts=[
                    k8s.core.v1.VolumeMountArgs(name="cache", mount_path=CACHE_MOUNT, read_only=True)
                ],
                resources=k8s.core.v1.ResourceRequirementsArgs(
                    requests=dict(HOST_DIR_RESOURCES["requests"]), limits=dict(HOST_DIR_RESOURCES["limits"])
                ),
                # Nothing to probe: the pod's only work is done by the kubelet before it starts.
                liveness_probe=k8s.core.v1.ProbeArgs(
                    exec_=k8s.core.v1.ExecActionArgs(command=["/bin/test", "-d", CACHE_MOUNT]), period_seconds=60
                ),
                readiness_probe=k8s.core.v1.ProbeArgs(
                    exec_=k8s.core.v1.ExecActionArgs(command=["/bin/test", "-d", CACHE_MOUNT]), period_seconds=30
                ),
                security_context=restricted_container(SYNC_UID),
            )
        ],
        volumes=[
            k8s.core.v1.VolumeArgs(
                name="cache",
                host_path=k8s.core.v1.HostPathVolumeSourceArgs(path=path, type="DirectoryOrCreate"),
            )
        ],
    )


def scanner_exceptions(pin_digests: bool) -> dict[str, str]:
    """The rules of the scanner the folder-maker does not meet, each with its reason (checkov
    docs, "Suppressing and skipping policies"), as the serving Deployment states its own."""
    reasons = [
        "CKV_K8S_15=imagePullPolicy IfNotPresent: the pinned sync image, already on the node for "
        "the serving pods"
    ]
    if not pin_digests:
        reasons.append(
            "CKV_K8S_43=serving.pin_image_digests is off for this stack: it runs pinned tags; prod runs digests"
        )
    return {f"checkov.io/skip{i}": reason for i, reason in enumerate(reasons, start=1)}


@dataclass(frozen=True)
class ModelCacheOutputs:
    claim_name: str
    # The serving pods wait for the claim (and its volume) to exist.
    ready: list[pulumi.Resource]


class ModelCache(pulumi.ComponentResource):
    """The cache's volume, claim and folder-making DaemonSet for one serving namespace."""

    outputs: ModelCacheOutputs

    def __init__(
        self,
        name: str,
        cache: ModelCacheConfig,
        *,
        pool_name: str,
        pool: GpuPoolConfig,
        scheduling: GpuScheduling,
        serving_namespace: pulumi.Resource,
        serving_namespace_name: str,
        pin_digests: bool,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("tf-serving-eks:model_cache:ModelCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        path = host_path(pool)
        labels = k8s_labels("model-cache", host_dir_name(pool_name))
        ns_name = node_namespace(serving_namespace_name)
        # hostPath is admitted by no Pod Security level below privileged; this namespace holds
        # only the folder-maker (module docstring).
        namespace = podsecurity.namespace(
            f"{name}-namespace", ns_name, component="model-cache", level="privileged", opts=child
        )
        k8s.apps.v1.DaemonSet(
            f"{name}-{pool_name}-host-dir",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=host_dir_name(pool_name),
                namespace=ns_name,
                labels=labels,
                # Its pods come and go with the GPU nodes (an autoscaler's, a node group
                # rolling to a new launch template): `pulumi up` must not wait for them, as it
                # does not for the serving pods (components/serving.py SKIP_AWAIT).
                annotations={"pulumi.com/skipAwait": "true", **scanner_exceptions(pin_digests)},
            ),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={"app.kubernetes.io/name": host_dir_name(pool_name)}
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=host_dir_pod_spec(path, scheduling, pinned(sync_image(), by_digest=pin_digests)),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        # The folder-maker talks to nothing and nothing talks to it (enforced by the VPC CNI).
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="deny-all", namespace=ns_name, labels=k8s_labels("model-cache", "deny-all")
            ),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Ingress", "Egress"]
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        volume = k8s.core.v1.PersistentVolume(
            f"{name}-{pool_name}-volume",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=volume_name(serving_namespace_name, pool_name), labels=labels),
            spec=persistent_volume_spec(cache, path, scheduling, serving_namespace_name, pool_name),
            opts=child,
        )
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-{pool_name}-claim",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=claim_name(pool_name), namespace=serving_namespace_name, labels=labels
            ),
            spec=claim_spec(cache, serving_namespace_name, pool_name),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[serving_namespace, volume])),
        )
        self.outputs = ModelCacheOutputs(claim_name=claim_name(pool_name), ready=[volume, claim])
        self.register_outputs({"claim": claim_name(pool_name), "host_path": path})

