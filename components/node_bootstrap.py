"""What a GPU pool's nodes are told at boot, beyond what EKS or Karpenter tell them: the
user data of an AL2023 pool (a nodeadm NodeConfig turning on parallel image pull and setting up
the instance store), and the
volume settings that make a cold start short (gp3 throughput, a pre-pulled Bottlerocket data
volume snapshot). Pure builders; the launch templates (components/gpu_pools.py) and the
EC2NodeClasses (components/karpenter.py) take their output.

It must not bootstrap the node into the cluster (cluster name, endpoint, CA, kubelet labels
and taints): EKS appends its own NodeConfig to a managed node group's user data (EKS user
guide, "Customizing managed nodes with launch templates"; eksctl docs, "Node bootstrapping":
"the default NodeConfig is being added by EKS MNG under the hood"), and Karpenter puts its
own NodeConfig first and ours after it (karpenter-provider-aws
pkg/providers/amifamily/bootstrap/nodeadm.go, Script). nodeadm merges every
`application/node.eks.aws` part in order (amazon-eks-ami nodeadm/internal/api/merge.go), so
our part only adds a feature gate.

nodeadm reads user data as a MIME multipart document when it parses as one (Content-Type
`multipart/*` with a `boundary` parameter), and takes the parts whose media type is
`application/node.eks.aws` as NodeConfig YAML or JSON (amazon-eks-ami
nodeadm/internal/configprovider/mime.go). EKS managed node groups require launch template
user data in that MIME format so they can merge theirs into it.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from components.config import GpuPoolConfig

NODECONFIG_API = "node.eks.aws/v1alpha1"
NODECONFIG_MEDIA_TYPE = "application/node.eks.aws"
# Ours, and found in no NodeConfig YAML we write (a boundary must not occur in the body).
MIME_BOUNDARY = "TFSERVING-EKS-NODE-BOUNDARY"
# The gate that turns on the SOCI snapshotter in parallel pull-and-unpack mode
# (amazon-eks-ami nodeadm/internal/api/featuregates.go: FastImagePull, off by default). It
# first shipped as AggressiveImagePull in AMI release v20250813 and has been FastImagePull
# since v20250821 (CHANGELOG.md, PR 2352 and PR 2381); our pools run far newer releases.
FAST_IMAGE_PULL = "FastImagePull"
# What nodeadm then writes to /etc/soci-snapshotter-grpc/config.toml (nodeadm
# internal/containerd/snapshotter/soci-snapshotter.config.toml): a fixed file, not settable
# from the NodeConfig. Up to 20 layer chunks of 16 MB download and 12 layers unpack at once
# per image (no limit across images, -1), gzip through unpigz, and unpacked layer blobs are
# discarded. Recorded for the README and the tests; nodeadm owns the values.
SOCI_PARALLEL_PULL_SETTINGS = {
    "max_concurrent_downloads_per_image": 20,
    "max_concurrent_unpacks_per_image": 12,
    "concurrent_download_chunk_size": "16mb",
    "discard_unpacked_layers": True,
}


# nodeadm's instance-store setup (nodeadm/internal/api/types.go LocalStorageOptions): RAID0
# stripes every NVMe instance-store disk into one array mounted at /mnt/k8s-disks/0 and
# bind-mounts /var/lib/kubelet, /var/lib/containerd, /var/lib/soci-snapshotter-grpc and
# /var/log/pods onto it (templates/al2023/runtime/bin/setup-local-disks, maybe_raid).
LOCAL_STORAGE_RAID0 = {"localStorage": {"strategy": "RAID0"}}


def node_config(pool: GpuPoolConfig, karpenter: bool = False) -> dict[str, Any] | None:
    """Our NodeConfig for the pool's nodes, or None when there is nothing to add. Karpenter
    sets up the instance store itself from its EC2NodeClass `instanceStorePolicy`
    (components/karpenter.py), which also tells it the node's ephemeral storage."""
    spec: dict[str, Any] = {}
    if pool.uses_parallel_pull:
        spec["featureGates"] = {FAST_IMAGE_PULL: True}
    if pool.instance_store == "raid0" and not karpenter:
        spec["instance"] = LOCAL_STORAGE_RAID0
    if not spec:
        return None
    return {"apiVersion": NODECONFIG_API, "kind": "NodeConfig", "spec": spec}


def mime_user_data(node_configs: list[dict[str, Any]]) -> str:
    """A MIME multipart document of one `application/node.eks.aws` part per NodeConfig (CRLF
    line ends, as RFC 2046 has them; Go's mime/multipart and Python's email read both)."""
    lines = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"', ""]
    for config in node_configs:
        body = yaml.safe_dump(config, sort_keys=False).rstrip("\n")
        assert MIME_BOUNDARY not in body
        lines += [f"--{MIME_BOUNDARY}", f"Content-Type: {NODECONFIG_MEDIA_TYPE}", "", "---", body, ""]
    lines += [f"--{MIME_BOUNDARY}--", ""]
    return "\r\n".join(lines)


def pool_user_data(pool: GpuPoolConfig, karpenter: bool = False) -> str | None:
    """The pool's user data in MIME form (an EC2NodeClass `userData`), or None."""
    config = node_config(pool, karpenter)
    return None if config is None else mime_user_data([config])


def launch_template_user_data(pool: GpuPoolConfig) -> str | None:
    """The same, base64-encoded, as EC2 launch templates take user data."""
    text = pool_user_data(pool)
    return None if text is None else base64.b64encode(text.encode()).decode()


def images_volume(pool: GpuPoolConfig) -> dict[str, Any]:
    """IOPS, throughput and source snapshot of the volume that holds the images (the root
    volume on AL2023, the data volume on Bottlerocket), by the EC2 API's names."""
    volume: dict[str, Any] = {"iops": pool.image_pull.volume_iops, "throughput": pool.volume_throughput_mibps}
    if pool.image_pull.prepulled_snapshot_id is not None:
        # The volume stays `encrypted`: restored from an unencrypted snapshot, EC2 encrypts
        # the new volume (EC2 API EbsBlockDevice.Encrypted: "whether the encryption state of
        # an EBS volume is changed while being restored from a backing snapshot").
        volume["snapshotId"] = pool.image_pull.prepulled_snapshot_id
    return volume
