"""The `gpu_pools` key: GPU node pools keyed by name, each with the provisioner that makes
its nodes (EKS managed node groups, Karpenter or EKS Auto Mode) and that provisioner's own
settings, and the zone and node-shape helpers that need nothing but the pools.

Whether the serving pods fit a pool needs the serving section too: that rule is on the
root model (components/config/stack.py), not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from components import catalog, validation
from components.config.base import (
    LabelValue,
    NodeGroupSizing,
    QualifiedName,
    RuleError,
    Section,
    _by_env,
    environment_of,
    section,
)
from components.validation import checked, worded

MANAGED_NODE_GROUP: Final = "managed-node-group"
KARPENTER: Final = "karpenter"
AUTO_MODE: Final = "auto-mode"
Provisioner = Literal["managed-node-group", "karpenter", "auto-mode"]

# Karpenter's duration fields (NodePool v1 CRD, disruption.consolidateAfter and
# template.spec.expireAfter: pattern ^(([0-9]+(s|m|h))+|Never)$); we take one unit.
KarpenterDuration = Annotated[str, worded(
    r"[0-9]+(s|m|h)|Never", "must be a whole number of seconds, minutes or hours (e.g. 30s, 10m, "
    "720h) or Never",
)]
# NodePool v1 CRD, disruption.budgets[].nodes: ^((100|[0-9]{1,2})%|[0-9]+)$.
BudgetNodes = Annotated[str, worded(
    r"(100|[0-9]{1,2})%|[0-9]+", "must be a node count (e.g. 1) or a percentage of the pool's nodes (e.g. 10%)"
)]
# budgets[].duration: ^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$ (cron has no seconds).
BudgetDuration = Annotated[str, worded(
    r"([0-9]+(h|m))|([0-9]+h[0-9]+m)", "must be minutes or hours, e.g. 30m, 2h or 1h30m"
)]
# budgets[].schedule: cron syntax or one of its macros (the CRD's pattern, words only).
BudgetSchedule = Annotated[str, worded(
    r"@(annually|yearly|monthly|weekly|daily|midnight|hourly)|(\S+\s){4}\S+",
    "must be a cron schedule of five fields (e.g. '0 9 * * mon-fri') or a macro such as @daily",
)]


def karpenter_controller_replicas(environment: str) -> int:
    """Karpenter controllers (leader-elected; a second one takes over at once): one in dev,
    two elsewhere, on separate system nodes (the chart's required hostname anti-affinity,
    karpenter 1.14.1 values.yaml `affinity.podAntiAffinity`)."""
    return 1 if environment == "dev" else 2


class DisruptionBudget(Section):
    """At most `nodes` of the pool disrupted at once (while `schedule` + `duration` is active)."""

    nodes: BudgetNodes = Field(description="Nodes (count or percentage) Karpenter may disrupt at once.")
    schedule: BudgetSchedule | None = Field(None, description="When the budget starts (cron, UTC).")
    duration: BudgetDuration | None = Field(None, description="How long it lasts from each start.")
    reasons: list[Literal["Underutilized", "Empty", "Drifted"]] | None = Field(
        None, description="Disruption reasons it limits (default: all)."
    )

    @model_validator(mode="after")
    def _schedule_with_duration(self) -> DisruptionBudget:
        # NodePool v1 CRD, budgets: "'schedule' must be set with 'duration'" (and the reverse).
        if (self.schedule is None) != (self.duration is None):
            raise RuleError(
                # The key that is missing, and the value of the one given.
                "duration" if self.duration is None else "schedule",
                self.schedule or self.duration,
                "schedule and duration go together: set both or neither",
            )
        return self


class CapacityReservationTerm(Section):
    """EC2 On-Demand Capacity Reservations (or Capacity Blocks) a Karpenter pool uses first:
    one by ID, or every one carrying all the given tags (EC2NodeClass v1
    spec.capacityReservationSelectorTerms; an ID goes alone in its term, the CRD's rule)."""

    id: Annotated[str, worded(r"cr-[0-9a-z]+", "must be a capacity reservation ID, e.g. cr-0123456789abcdef0")] | None = Field(
        None, description="The reservation's ID."
    )
    tags: dict[str, str] | None = Field(
        None, min_length=1, max_length=20,
        description="Every reservation with all these tags (a value of * matches any value).",
    )

    @model_validator(mode="after")
    def _one_way_to_select(self) -> CapacityReservationTerm:
        if (self.id is None) == (self.tags is None):
            raise RuleError(
                "id", self.id, "name a reservation by id or select reservations by tags: one of the two, not both"
            )
        if self.tags is not None:
            for key, value in self.tags.items():
                if not key or not value:
                    # EC2NodeClass CRD: "empty tag keys or values aren't supported".
                    raise RuleError(f"tags.{key}", value, "tag keys and values must not be empty (use * for any value)")
        return self

    def selector(self) -> dict[str, Any]:
        return {"id": self.id} if self.id is not None else {"tags": dict(self.tags or {})}


class NodeDisruptionConfig(Section):
    """How Karpenter (ours, or EKS Auto Mode's) removes and replaces a pool's nodes."""

    env_defaults = {
        # Dev gives back idle or half-used GPUs quickly; prod only removes empty nodes, and
        # late, so that serving pods (minutes to load a model) are not moved to save money.
        "consolidation_policy": _by_env("WhenEmptyOrUnderutilized", "WhenEmpty"),
        "consolidate_after": _by_env("5m", "30m"),
        "budgets": _by_env([{"nodes": "100%"}], [{"nodes": "1"}]),
    }

    consolidation_policy: Literal["WhenEmpty", "WhenEmptyOrUnderutilized"] = Field(
        description="Which nodes Karpenter may consolidate away: only empty ones, or also "
        "under-used ones whose pods fit elsewhere."
    )
    consolidate_after: KarpenterDuration = Field(
        description="How long a node stays empty (or under-used) before Karpenter may remove it."
    )
    budgets: list[DisruptionBudget] = Field(
        min_length=1, max_length=50, description="Limits on how many nodes are disrupted at once."
    )
    expire_after: KarpenterDuration = Field(
        "720h", description="Node lifetime: Karpenter replaces older nodes (picks up new AMIs)."
    )

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> NodeDisruptionConfig:
        if environment_of(info) == "prod" and self.consolidate_after in ("0s", "0m", "0h"):
            raise RuleError(
                "consolidate_after",
                self.consolidate_after,
                "prod must not remove a node the moment it empties (new serving pods would "
                "wait for a new GPU node); use at least 1m",
            )
        return self


class KarpenterPoolConfig(NodeDisruptionConfig):
    """Settings of a pool whose nodes Karpenter launches (provisioner: karpenter)."""

    capacity_reservations: list[CapacityReservationTerm] = Field(
        default_factory=list,
        max_length=30,
        description="On-Demand Capacity Reservations or Capacity Blocks Karpenter fills first "
        "(capacity type reserved), falling back to the pool's capacity_type.",
    )



# gp3 limits (Amazon EBS user guide, "General Purpose SSD volumes"): 3,000 IOPS and 125 MiB/s
# come with every volume, throughput may be at most 0.25 MiB/s per provisioned IOPS. We keep
# to the range every consumer documents (Karpenter's EC2NodeClass v1 CRD: gp3 3,000-16,000
# IOPS, 125-1,000 MiB/s), below EBS's newer, higher ceilings.
GP3_BASE_THROUGHPUT_MIBPS: Final = 125
GP3_BASE_IOPS: Final = 3000
GP3_MIBPS_PER_IOPS: Final = 0.25
# nodeadm doc/examples.md, "Enabling fast image pull": at least 600 MiB/s of root volume
# throughput, "below that value, you may see longer image pull times with this flag".
PARALLEL_PULL_THROUGHPUT_MIBPS: Final = 600
# nodeadm internal/containerd/config.go UseSOCISnapshotter: the FastImagePull gate is ignored
# (silently: plain containerd pulls) below 4 vCPUs or 7 GiB of memory.
PARALLEL_PULL_MIN_VCPUS: Final = 4
PARALLEL_PULL_MIN_MEMORY_GIB: Final = 7
# EC2 snapshot IDs: snap- and 8 (older) or 17 hexadecimal digits.
SnapshotId = Annotated[str, worded(r"snap-([0-9a-f]{8}|[0-9a-f]{17})", "must be an EBS snapshot ID: snap- and 8 or 17 hexadecimal digits")]


class ImagePullConfig(Section):
    """How a new node gets the serving image (~6 GB) onto its disk."""

    parallel: bool = Field(
        True,
        description="AL2023 pools: pull and unpack image layers in parallel (nodeadm's "
        "FastImagePull: the SOCI snapshotter in parallel-pull mode). Costs CPU, memory and disk "
        "I/O while the image is pulled; needs nodes of 4 vCPUs and 7 GiB or more.",
    )
    volume_throughput_mibps: int | None = Field(
        None,
        ge=GP3_BASE_THROUGHPUT_MIBPS,
        le=1000,
        description=f"gp3 throughput of the images volume (MiB/s). Unset: {PARALLEL_PULL_THROUGHPUT_MIBPS} "
        f"with parallel pull (nodeadm's advice), else gp3's included {GP3_BASE_THROUGHPUT_MIBPS}. "
        "Throughput above 125 is billed per MiB/s-month while the volume exists.",
    )
    volume_iops: int = Field(
        GP3_BASE_IOPS,
        ge=GP3_BASE_IOPS,
        le=16000,
        description="gp3 IOPS of the images volume (3000 included; throughput may be at most "
        "0.25 MiB/s per IOPS).",
    )
    prepulled_snapshot_id: SnapshotId | None = Field(
        None,
        description="Bottlerocket pools: EBS snapshot of a data volume with the images already "
        "pulled (README, Cold start); every new node's data volume starts from it. disk_size_gib "
        "must be at least the snapshot's size (EC2 refuses a smaller volume).",
    )


WarmPoolState = Literal["Stopped", "Running", "Hibernated"]


class WarmPoolConfig(Section):
    """An EC2 Auto Scaling warm pool beside each of the pool's node groups (EKS API
    WarmPoolConfig): instances booted once, kept Stopped (EBS paid) or Running (all paid),
    moved into the group when it scales out."""

    enabled: bool = Field(False, description="Keep pre-booted instances beside each node group.")
    pool_state: WarmPoolState = Field(
        "Stopped",
        description="Stopped: only the volumes are billed; a scale-out starts the instance. "
        "Running: billed as a running instance, joins fastest. Hibernated is refused for GPU "
        "instance types.",
    )
    min_size: int = Field(
        0,
        ge=0,
        le=100,
        description="Warm instances kept at least (pool total, split over zones like the node "
        "counts). The warm pool holds up to max_size minus the group's nodes.",
    )
    reuse_on_scale_in: bool = Field(
        False,
        description="Return instances to the warm pool on scale-in instead of terminating them "
        "(not on Bottlerocket).",
    )


# EKS Auto Mode replaces a node after 21 days at most (EKS user guide, awsdocs/amazon-eks-user-guide
# latest/ug/automode/automode.adoc, "Upgrades": "EKS Auto Mode enforces a 21-day maximum node
# lifetime"): a longer expireAfter, or Never, would promise what it does not do.
AUTO_MODE_MAX_NODE_HOURS: Final = 21 * 24
# The accelerated families Auto Mode launches (latest/ug/automode/automode-learn-instances.adoc,
# "Supported instance reference": Accelerated Computing p5, p4d, p3, p3dn, gr6, g6, g6e, g5g,
# g5, g4dn, inf2, inf1, trn1, trn1n), of those our catalogue holds.
AUTO_MODE_GPU_FAMILIES: Final = frozenset({"g4dn", "g5", "g6", "g6e", "p4d", "p5"})


def duration_hours(value: str) -> float:
    """A KarpenterDuration in hours (Never: infinite)."""
    if value == "Never":
        return float("inf")
    return int(value[:-1]) / {"s": 3600, "m": 60, "h": 1}[value[-1]]


class AutoModePoolConfig(NodeDisruptionConfig):
    """Settings of a pool whose nodes EKS Auto Mode launches (provisioner: auto-mode). Auto
    Mode's node pools are Karpenter NodePools (karpenter.sh/v1), so the disruption settings
    are Karpenter's; only the node lifetime is bounded by Auto Mode's own 21 days."""

    expire_after: KarpenterDuration = Field(
        "336h",
        description="Node lifetime (at most 504h, Auto Mode's own limit): older nodes are "
        "replaced, which is how they get Auto Mode's new AMIs.",
    )

    @model_validator(mode="after")
    def _within_auto_modes_lifetime(self) -> AutoModePoolConfig:
        if duration_hours(self.expire_after) > AUTO_MODE_MAX_NODE_HOURS:
            raise RuleError(
                "expire_after",
                self.expire_after,
                f"EKS Auto Mode replaces every node after 21 days ({AUTO_MODE_MAX_NODE_HOURS}h) "
                f"whatever the NodePool says; use at most {AUTO_MODE_MAX_NODE_HOURS}h",
            )
        return self


class TaintConfig(Section):
    key: QualifiedName = Field("nvidia.com/gpu", description="Taint key on every GPU node.")
    value: LabelValue = Field("true", description="Taint value.")
    effect: Literal["NoSchedule", "NoExecute", "PreferNoSchedule"] = Field(
        "NoSchedule", description="Taint effect; NoSchedule keeps non-GPU pods off GPU nodes."
    )


# A pool's per-zone node groups are named `gpu-<pool>-<zone>-nodes` plus the 8 characters
# Pulumi's auto-naming appends; EKS node group names are at most 63 characters and zone
# names run to 15 (ap-southeast-2a), so pool names stay at 24.
PoolName = Annotated[str, checked(lambda v: validation.dns1123_label(v, 24))]


def strict_zone_spread(environment: str) -> bool:
    """Whether the serving pods' zone spread is strict (DoNotSchedule): prod only."""
    return environment == "prod"


def zone_share(total: int, zone_count: int) -> list[int]:
    """`total` nodes split over `zone_count` per-zone node groups, in zone-name order: each
    gets total // zone_count and the first total % zone_count zones one more."""
    base, extra = divmod(total, zone_count)
    return [base + (1 if i < extra else 0) for i in range(zone_count)]


# How messages name the provisioners that launch nodes without an Auto Scaling group.
PROVISIONER_NAMES: Final = {KARPENTER: "Karpenter", AUTO_MODE: "EKS Auto Mode"}
AUTO_MODE_HAS_NO_NODE_COUNT = (
    "is for provisioner: managed-node-group only; EKS Auto Mode keeps no standing nodes (it "
    "launches one for each pending pod, up to max_size nodes' GPUs) and replaces nodes by its "
    "disruption budgets (auto_mode.budgets)"
)
# What Auto Mode decides itself: a key that asks otherwise would be silently ignored.
AUTO_MODE_OWNS = {
    # Auto Mode chooses the AMI (latest/ug/automode/automode-learn-instances.adoc, comparison
    # table: "AWS determines the operating system and image").
    "ami_type": "EKS Auto Mode picks the AMI of its nodes itself; remove ami_type",
    # Its NVIDIA device plugin runs inside the node, not as a DaemonSet (EKS user guide,
    # auto-accelerated: "EKS Auto Mode includes the NVIDIA device plugin for Kubernetes. This
    # plugin runs automatically and isn't visible as a daemon set"), and the guide documents
    # no setting of it: the chart's time-slicing config never reaches it.
    "time_slicing_replicas": "EKS Auto Mode runs its own NVIDIA device plugin, which has no "
    "time-slicing setting; use 1, or provisioner managed-node-group or karpenter for a "
    "time-sliced pool",
}

KARPENTER_HAS_NO_NODE_COUNT = (
    "is for provisioner: managed-node-group only; Karpenter keeps no standing nodes (it "
    "launches one for each pending pod, up to max_size nodes' GPUs) and replaces nodes by its "
    "disruption budgets (karpenter.budgets)"
)


class GpuPoolConfig(NodeGroupSizing):
    """One GPU pool: an EKS managed node group per availability zone of the private subnets,
    all alike (CA's --balance-similar-node-groups keeps them level). Keyed by name in
    `gpu_pools`; min/desired/max are the pool's totals, split over its zones (zone_share)."""

    env_defaults = {
        "capacity_type": _by_env("SPOT", "ON_DEMAND"),
        # One node group per AZ (3 by default): max_size must give each zone at least one
        # node, and prod's strict spread wants the same standing nodes in every zone.
        "min_size": _by_env(0, 3),
        "desired_size": _by_env(0, 3),
        "max_size": _by_env(3, 6),
    }

    provisioner: Provisioner = Field(
        MANAGED_NODE_GROUP,
        description="What makes the pool's nodes: managed-node-group (one EKS managed node group "
        "per zone, scaled by cluster-autoscaler), karpenter (a Karpenter NodePool) or auto-mode "
        "(an EKS Auto Mode NodePool; cluster mode create only).",
    )
    karpenter: KarpenterPoolConfig = section("Karpenter settings (provisioner: karpenter only).")
    auto_mode: AutoModePoolConfig = section("EKS Auto Mode settings (provisioner: auto-mode only).")
    instance_types: list[str] = Field(
        min_length=1,
        description="GPU instance types from the catalogue (components/catalog.py); all of one "
        "pool must have the same vCPUs, memory, GPU model and GPU count.",
    )
    ami_type: catalog.AmiType = Field(
        "AL2023_x86_64_NVIDIA", description="EKS-optimized NVIDIA AMI: AL2023 or Bottlerocket."
    )
    capacity_type: Literal["SPOT", "ON_DEMAND"] = Field(
        description="SPOT (cheap, may be reclaimed) or ON_DEMAND."
    )
    disk_size_gib: int = Field(
        100,
        ge=50,
        le=2000,
        description="Encrypted gp3 volume for images and models (serving GPU images are ~6 GB).",
    )
    max_unavailable: int = Field(
        1, ge=1, le=100, description="Nodes replaced at once during a node group update."
    )
    taint: TaintConfig = section("Taint that keeps non-GPU pods off these nodes.")
    time_slicing_replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="NVIDIA time-slicing: pods that share one GPU (1 = no sharing; for dev only; "
        "AL2023 pools only).",
    )

    instance_store: Literal["none", "raid0"] = Field(
        "none",
        description="raid0: nodeadm stripes the instance's NVMe disks into one RAID0 array at "
        "/mnt/k8s-disks/0 and moves the kubelet's and containerd's folders onto it (images, "
        "emptyDir volumes, the node-local model cache); none: they stay on the EBS volume. "
        "AL2023 pools only.",
    )
    image_pull: ImagePullConfig = section("How new nodes pull the serving image (README, Cold start).")
    warm_pool: WarmPoolConfig = section(
        "EC2 Auto Scaling warm pool of pre-booted nodes (provisioner: managed-node-group, "
        "ON_DEMAND, one instance type)."
    )

    @model_validator(mode="before")
    @classmethod
    def _karpenter_has_no_standing_nodes(cls, data: Any) -> Any:
        # Runs before the env defaults fill min/desired (child validators run first): a
        # Karpenter pool has no node count of its own, so its defaults are 0, not prod's 3.
        if isinstance(data, dict) and data.get("provisioner") in (KARPENTER, AUTO_MODE):
            rule = KARPENTER_HAS_NO_NODE_COUNT if data["provisioner"] == KARPENTER else AUTO_MODE_HAS_NO_NODE_COUNT
            for key in ("min_size", "desired_size"):
                # Refused here, before the sizing rules compare them with each other.
                if data.get(key) not in (None, 0):
                    raise RuleError(key, data[key], rule)
            data = {**data, "min_size": 0, "desired_size": 0}
        return data

    @model_validator(mode="after")
    def _keys_of_its_provisioner(self) -> GpuPoolConfig:
        # Each provisioner's own section is refused on a pool of another provisioner.
        for key, owner in (("karpenter", KARPENTER), ("auto_mode", AUTO_MODE)):
            if key in self.model_fields_set and self.provisioner != owner:
                raise RuleError(
                    key,
                    "...",
                    f"is for provisioner: {owner} only; this pool's provisioner is "
                    f"{self.provisioner} (remove the section or set provisioner: {owner})",
                )
        if self.provisioner == MANAGED_NODE_GROUP:
            return self
        # min_size and desired_size are refused before validation (above).
        rule = KARPENTER_HAS_NO_NODE_COUNT if self.provisioner == KARPENTER else AUTO_MODE_HAS_NO_NODE_COUNT
        if "max_unavailable" in self.model_fields_set:
            raise RuleError("max_unavailable", self.max_unavailable, rule)
        if self.provisioner == AUTO_MODE:
            if "ami_type" in self.model_fields_set:
                raise RuleError("ami_type", self.ami_type, AUTO_MODE_OWNS["ami_type"])
            if self.time_slicing_replicas > 1:
                raise RuleError(
                    "time_slicing_replicas", self.time_slicing_replicas, AUTO_MODE_OWNS["time_slicing_replicas"]
                )
        return self

    @model_validator(mode="after")
    def _types_auto_mode_launches(self) -> GpuPoolConfig:
        if self.provisioner != AUTO_MODE:
            return self
        for i, name in enumerate(self.instance_types):
            family = name.partition(".")[0]
            if catalog.instance_type(name) is not None and family not in AUTO_MODE_GPU_FAMILIES:
                raise RuleError(
                    f"instance_types.{i}",
                    name,
                    f"EKS Auto Mode does not launch the {family} family; its GPU families in the "
                    f"catalogue: {', '.join(sorted(AUTO_MODE_GPU_FAMILIES))}",
                )
        return self

    @model_validator(mode="after")
    def _known_gpu_types(self) -> GpuPoolConfig:
        for i, name in enumerate(self.instance_types):
            found = catalog.instance_type(name)
            if found is None or not found.is_gpu:
                what = "not a GPU instance type" if found else "not in the GPU catalogue"
                raise RuleError(
                    f"instance_types.{i}",
                    name,
                    f"{what}; known GPU types: {', '.join(sorted(catalog.GPU_INSTANCE_TYPES))}",
                )
        if len(set(self.instance_types)) != len(self.instance_types):
            raise RuleError("instance_types", self.instance_types, "lists a type twice")
        return self

    @model_validator(mode="after")
    def _time_slicing_reaches_the_plugin(self) -> GpuPoolConfig:
        # Bottlerocket's NVIDIA variants run their own device plugin, configured only through
        # its settings (settings.kubelet-device-plugins.nvidia.*, bottlerocket.dev "kubelet
        # device plugins"); the chart's time-slicing config never reaches it.
        if self.is_bottlerocket and self.time_slicing_replicas > 1:
            raise RuleError(
                "time_slicing_replicas",
                self.time_slicing_replicas,
                "time-slicing is configured through the NVIDIA device plugin chart, which does "
                "not run on Bottlerocket (its NVIDIA variants bring their own plugin); use "
                "ami_type AL2023_x86_64_NVIDIA for a time-sliced pool, or 1",
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> GpuPoolConfig:
        if environment_of(info) == "prod" and self.time_slicing_replicas > 1:
            raise RuleError(
                "time_slicing_replicas",
                self.time_slicing_replicas,
                "time-slicing gives no memory isolation between pods; not allowed in prod",
            )
        return self

    @model_validator(mode="after")
    def _image_pull_fits_the_pool(self) -> GpuPoolConfig:
        pull = self.image_pull
        if self.uses_auto_mode:
            # An Auto Mode NodeClass takes no user data and no snapshot: its ephemeralStorage
            # has size, iops and throughput only (EKS user guide, latest/ug/automode/
            # create-node-class.adoc, "Node Class Specification").
            for key in ("parallel", "prepulled_snapshot_id"):
                if key in pull.model_fields_set:
                    raise RuleError(
                        f"image_pull.{key}",
                        getattr(pull, key),
                        "EKS Auto Mode nodes take no user data or snapshot of ours (their "
                        "NodeClass sets only the volume's size, IOPS and throughput); remove it, "
                        "or keep image_pull.volume_iops / volume_throughput_mibps",
                    )
        if self.is_bottlerocket and pull.parallel and "parallel" in pull.model_fields_set:
            raise RuleError(
                "image_pull.parallel",
                True,
                "parallel pull is nodeadm's FastImagePull, which only AL2023 nodes run; "
                "Bottlerocket pools start faster from image_pull.prepulled_snapshot_id instead",
            )
        if self.uses_parallel_pull:
            for i, instance in enumerate(self.instances):
                if instance.vcpus < PARALLEL_PULL_MIN_VCPUS or instance.memory_gib < PARALLEL_PULL_MIN_MEMORY_GIB:
                    raise RuleError(
                        f"instance_types.{i}",
                        instance.name,
                        f"has {instance.vcpus} vCPUs and {instance.memory_gib} GiB; nodeadm ignores "
                        f"parallel pull below {PARALLEL_PULL_MIN_VCPUS} vCPUs or "
                        f"{PARALLEL_PULL_MIN_MEMORY_GIB} GiB, so it would silently be off: use a "
                        "larger type or set image_pull.parallel: false",
                    )
        most = pull.volume_iops * GP3_MIBPS_PER_IOPS
        if self.volume_throughput_mibps > most:
            raise RuleError(
                "image_pull.volume_throughput_mibps",
                self.volume_throughput_mibps,
                f"gp3 allows at most {GP3_MIBPS_PER_IOPS} MiB/s per IOPS: {pull.volume_iops} IOPS "
                f"allow {most:.0f} MiB/s; raise image_pull.volume_iops to at least "
                f"{int(self.volume_throughput_mibps / GP3_MIBPS_PER_IOPS)} or lower the throughput",
            )
        if pull.prepulled_snapshot_id is not None and not self.is_bottlerocket:
            raise RuleError(
                "image_pull.prepulled_snapshot_id",
                pull.prepulled_snapshot_id,
                "is for Bottlerocket pools, whose images live on their own data volume; an "
                "AL2023 node keeps images on its root volume, which comes from the AMI",
            )
        return self

    @model_validator(mode="after")
    def _instance_store_is_there(self) -> GpuPoolConfig:
        if self.instance_store == "none":
            return self
        if self.uses_auto_mode:
            # Auto Mode's NodeClass has no instance-store setting and takes no user data
            # (create-node-class.adoc, "Node Class Specification").
            raise RuleError(
                "instance_store",
                self.instance_store,
                "EKS Auto Mode nodes take no nodeadm settings of ours: set instance_store: none",
            )
        if self.is_bottlerocket:
            raise RuleError(
                "instance_store",
                self.instance_store,
                "is set up by nodeadm's localStorage (AL2023 nodes); Bottlerocket pools keep "
                "images and volumes on their data volume: set instance_store: none",
            )
        for i, name in enumerate(self.instance_types):
            if catalog.local_nvme_gib(name) <= 0:
                raise RuleError(
                    f"instance_types.{i}", name, "has no instance store for instance_store: raid0"
                )
        return self

    @property
    def instance_store_gib(self) -> float:
        """The smallest instance store of the pool's types (GiB), 0 when not used."""
        if self.instance_store == "none":
            return 0.0
        return min(catalog.local_nvme_gib(name) for name in self.instance_types)

    @model_validator(mode="after")
    def _warm_pool_is_allowed(self) -> GpuPoolConfig:
        warm = self.warm_pool
        if not warm.enabled:
            return self
        if not self.has_node_groups:
            raise RuleError(
                "warm_pool.enabled",
                True,
                f"warm pools belong to an Auto Scaling group, and "
                f"{PROVISIONER_NAMES[self.provisioner]} launches its nodes without one; use "
                "provisioner: managed-node-group for a warm pool",
            )
        # EC2 Auto Scaling user guide, "Warm pools": no warm pool for a group that launches
        # Spot Instances or has a mixed instances policy (several instance types).
        if self.capacity_type == "SPOT":
            raise RuleError(
                "warm_pool.enabled",
                True,
                "EC2 Auto Scaling has no warm pools for groups that launch Spot Instances; use "
                "capacity_type: ON_DEMAND or turn the warm pool off",
            )
        if len(self.instance_types) > 1:
            raise RuleError(
                "warm_pool.enabled",
                True,
                f"the pool has {len(self.instance_types)} instance types, which makes its groups "
                "mixed-instances groups, and EC2 Auto Scaling has no warm pools for those; list "
                "one type",
            )
        if warm.pool_state == "Hibernated":
            why = (
                "EKS refuses Hibernated warm pools on Bottlerocket (EKS API, WarmPoolConfig)"
                if self.is_bottlerocket
                else f"EC2 hibernation supports no GPU instance family ({self.instance_types[0]}: "
                "EC2 user guide, hibernation prerequisites)"
            )
            raise RuleError("warm_pool.pool_state", warm.pool_state, f"{why}; use Stopped or Running")
        if warm.reuse_on_scale_in and self.is_bottlerocket:
            raise RuleError(
                "warm_pool.reuse_on_scale_in",
                True,
                "EKS does not support reuseOnScaleIn with Bottlerocket AMIs (EKS API, WarmPoolConfig)",
            )
        if warm.min_size > self.max_size:
            raise RuleError(
                "warm_pool.min_size",
                warm.min_size,
                f"the warm pool never holds more than max_size ({self.max_size}) instances",
            )
        return self

    @property
    def uses_parallel_pull(self) -> bool:
        """Whether the pool's nodes get nodeadm's FastImagePull (AL2023 only)."""
        return self.image_pull.parallel and not self.is_bottlerocket and not self.uses_auto_mode

    @property
    def volume_throughput_mibps(self) -> int:
        """gp3 throughput of the images volume: configured, or nodeadm's advice with parallel pull."""
        configured = self.image_pull.volume_throughput_mibps
        if configured is not None:
            return configured
        return PARALLEL_PULL_THROUGHPUT_MIBPS if self.uses_parallel_pull else GP3_BASE_THROUGHPUT_MIBPS

    @property
    def uses_karpenter(self) -> bool:
        return self.provisioner == KARPENTER

    @property
    def uses_auto_mode(self) -> bool:
        return self.provisioner == AUTO_MODE

    @property
    def has_node_groups(self) -> bool:
        """Whether its nodes come from EKS managed node groups (scaled by cluster-autoscaler)."""
        return self.provisioner == MANAGED_NODE_GROUP

    @property
    def is_bottlerocket(self) -> bool:
        return self.ami_type.startswith("BOTTLEROCKET")

    @property
    def instances(self) -> list[catalog.InstanceType]:
        return [catalog.GPU_INSTANCE_TYPES[n] for n in self.instance_types]

    @property
    def gpus_per_node(self) -> int:
        """`nvidia.com/gpu` a node of this pool advertises (time-slicing multiplies it)."""
        return self.instances[0].gpus * self.time_slicing_replicas

    @property
    def gpu_model(self) -> str:
        return str(self.instances[0].gpu_model)


def node_shape(instance: catalog.InstanceType) -> tuple[int, int, int, str | None]:
    """What cluster-autoscaler plans a node with: vCPUs, memory, GPU count and model."""
    return (instance.vcpus, instance.memory_gib, instance.gpus, instance.gpu_model)


def describe_shape(instance: catalog.InstanceType) -> str:
    return (
        f"{instance.name} ({instance.vcpus} vCPU, {instance.memory_gib} GiB, "
        f"{instance.gpus}x {instance.gpu_model})"
    )


def _one_shape_per_pool(pools: dict[str, GpuPoolConfig]) -> dict[str, GpuPoolConfig]:
    # cluster-autoscaler builds every node of a group as the group's first instance type
    # (cloudprovider/aws/README.md: "only the first instance type found will be used"),
    # so a larger second type would be planned as the first and a smaller one over-promised.
    for name, pool in pools.items():
        first = pool.instances[0]
        for other in pool.instances[1:]:
            if node_shape(other) != node_shape(first):
                raise RuleError(
                    f"{name}.instance_types",
                    pool.instance_types,
                    f"pool '{name}' mixes node shapes: {describe_shape(first)} and "
                    f"{describe_shape(other)}; cluster-autoscaler plans the whole pool as its "
                    "first type, so all types of a pool need the same vCPUs, memory, GPU model "
                    "and count (make a pool per shape)",
                )
    return pools


# The `gpu_pools` map. The one-shape rule is checked on the map, not on each pool, because
# its message names the pool, which only the map's key knows.
GpuPools = Annotated[dict[PoolName, GpuPoolConfig], AfterValidator(_one_shape_per_pool)]


def pool_zone_problems(
    pools: Mapping[str, GpuPoolConfig],
    zone_count: int,
    strict_pool: str | None,
    strict_replicas: int,
    pod_gpus: int,
) -> list[RuleError]:
    """Why pools cannot be split over `zone_count` per-zone node groups (keys under gpu_pools).

    `strict_pool` is the pool the serving pods spread over with DoNotSchedule (None when
    the spread is soft); `strict_replicas` pods of `pod_gpus` GPUs each must fit it then.
    """
    problems: list[RuleError] = []
    for name, pool in pools.items():
        if not pool.has_node_groups:
            # No per-zone node groups: Karpenter (or Auto Mode's Karpenter) picks each node's
            # zone for the pods that wait (it honours their topology spread), within the
            # pool's GPU limit.
            continue
        if pool.max_size < zone_count:
            # EKS: a node group's scalingConfig.maxSize is at least 1 (CreateNodegroup API).
            problems.append(
                RuleError(
                    f"gpu_pools.{name}.max_size",
                    pool.max_size,
                    f"pool '{name}' has one node group in each of the {zone_count} zones of the "
                    f"private subnets and each needs max_size >= 1: use at least {zone_count}",
                )
            )
            continue
        if name != strict_pool:
            continue
        for key in ("min_size", "desired_size"):
            value = getattr(pool, key)
            if value % zone_count:
                problems.append(
                    RuleError(
                        f"gpu_pools.{name}.{key}",
                        value,
                        f"serving pods spread strictly over zones (DoNotSchedule) on pool "
                        f"'{name}', so its {zone_count} zones must get the same number of "
                        f"nodes: use a multiple of {zone_count}",
                    )
                )
        pods_per_node = pool.gpus_per_node // pod_gpus
        if pods_per_node == 0:
            continue  # the pod does not fit a node at all: _serving_fits_its_pool says so
        per_zone = [n * pods_per_node for n in zone_share(pool.max_size, zone_count)]
        # maxSkew 1: no zone may hold more than one pod above the emptiest zone.
        reachable = sum(min(p, min(per_zone) + 1) for p in per_zone)
        if strict_replicas > reachable:
            problems.append(
                RuleError(
                    f"gpu_pools.{name}.max_size",
                    pool.max_size,
                    f"{strict_replicas} serving pods spread over {zone_count} zones with max "
                    f"skew 1 need more nodes than pool '{name}' has at max_size "
                    f"{pool.max_size} (per zone {'/'.join(map(str, zone_share(pool.max_size, zone_count)))}, "
                    f"room for {reachable} pods); raise max_size",
                )
            )
    return problems
