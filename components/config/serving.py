"""The `serving` key: the TF Serving workload, its models, batching and image cache.

Rules here read only the serving section; whether its pods fit their nodes, or its
secrets are set, needs other keys and lives on the root model (components/config/stack.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from components import catalog, validation
from components.config.base import (
    Name,
    RuleError,
    Section,
    _by_env,
    created_namespace_problem,
    section,
)
from components.validation import checked, worded

# serving.name names a Service, which must be a DNS-1035 label (starts with a letter).
ServiceName = Annotated[str, checked(lambda v: validation.dns1035_label(v, 40))]

CpuQuantity = Annotated[str, checked(validation.cpu_quantity)]
MemoryQuantity = Annotated[str, checked(validation.memory_quantity)]


cpu_milli = catalog.cpu_milli
memory_mib = catalog.memory_mib


# TF Serving's share of a GPU it has to itself: the rest is the CUDA context, cuDNN/cuBLAS
# workspaces outside the BFC allocator and headroom (TF's own default is to grow to nearly all).
GPU_SHARE_OF_ONE_PROCESS = 0.9

class CanaryConfig(Section):
    """A new version served by a second Deployment and given a share of the traffic."""

    version: int = Field(ge=1, description="The canary version (newer than every served one).")
    weight: int = Field(
        10, ge=0, le=100, description="Percent of the model's traffic sent to the canary pods."
    )


CANARY_LABEL = "canary"


class ModelConfig(Section):
    """One model TF Serving serves, keyed by its name in `serving.models`."""

    version_policy: Literal["latest", "specific"] = Field(
        "latest", description="Serve the newest `latest_count` versions, or exactly `versions`."
    )
    latest_count: int = Field(1, ge=1, le=10, description="Versions served with policy latest.")
    versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions served with policy specific."
    )
    labels: dict[Name, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Version labels (e.g. stable: 3, previous: 2); policy specific only, each "
        "label on a served version. `canary` is set from `canary`.",
    )
    canary: CanaryConfig | None = Field(
        None, description="Canary rollout of a new version (policy specific only)."
    )
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        le=640,
        description="GPU memory one loaded version takes (weights and working memory, as "
        "measured); when set, a stack whose GPU cannot hold the versions a pod loads, plus "
        "one more during a version switch, is refused.",
    )

    disk_gib: float | None = Field(
        None,
        gt=0,
        le=10000,
        description="Disk one version takes (its SavedModel folder); when set, a node-local "
        "model cache (serving.model_cache) or a node disk too small for the versions is refused.",
    )

    def versions_held(self, canary_pod: bool = False) -> int:
        """Versions a pod holds loaded: the served ones (and the canary's, on a canary pod)."""
        held = len(self.versions) if self.version_policy == "specific" else self.latest_count
        return held + (1 if canary_pod and self.canary is not None else 0)

    def versions_while_switching(self, canary_pod: bool = False) -> int:
        """Versions a pod holds at most: those it serves and the one arriving, which TF
        Serving's AvailabilityPreservingPolicy (server.cc sets it) loads before it unloads the
        old one, and the sync fetches before it retires the old one."""
        return self.versions_held(canary_pod) + 1

    @model_validator(mode="after")
    def _policy_consistent(self) -> ModelConfig:
        if self.version_policy == "specific":
            if not self.versions:
                raise RuleError("versions", [], "policy specific needs at least one version")
            if len(set(self.versions)) != len(self.versions):
                raise RuleError("versions", self.versions, "lists a version twice")
            if self.canary is not None:
                if self.canary.version <= max(self.versions):
                    raise RuleError(
                        "canary.version",
                        self.canary.version,
                        f"must be newer than the served versions {sorted(self.versions)} (TF "
                        "Serving answers unversioned requests with the newest loaded version)",
                    )
            if CANARY_LABEL in self.labels:
                raise RuleError(
                    f"labels.{CANARY_LABEL}", self.labels[CANARY_LABEL], "is set from `canary`; remove it"
                )
            for label, version in self.labels.items():
                if version not in self.versions:
                    raise RuleError(
                        f"labels.{label}",
                        version,
                        f"points at a version that is not served ({self.versions})",
                    )
        else:
            if self.versions:
                raise RuleError("versions", self.versions, "only with version_policy: specific")
            if self.canary is not None:
                raise RuleError("canary", self.canary.version, "needs version_policy: specific")
            if self.labels:
                raise RuleError(
                    "labels",
                    dict(self.labels),
                    "labels need version_policy: specific (TF Serving labels only loaded "
                    "versions, and `latest` changes them under the label)",
                )
        return self


class BatchingConfig(Section):
    """TF Serving's server-side batching (its batching guide's starting point for GPUs)."""

    enabled: bool = Field(True, description="Batch requests on the server (GPU throughput).")
    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest batch.")
    batch_timeout_micros: int = Field(
        1000, ge=0, le=1_000_000, description="Longest a request waits for a batch to fill."
    )
    max_enqueued_batches: int = Field(
        100, ge=1, le=100_000, description="Queue bound; beyond it requests fail fast."
    )
    num_batch_threads: int | None = Field(
        None, ge=1, le=256, description="Threads running batches. Unset: the pod's CPU count."
    )


class ImageCacheConfig(Section):
    """An ECR pull-through cache of Docker Hub for the serving image."""

    env_defaults = {"enabled": _by_env(False, True)}

    enabled: bool = Field(
        description="Pull tensorflow/serving through an ECR pull-through cache in this account "
        "and region, so GPU scale-ups don't depend on Docker Hub or its pull limits."
    )
    # ECR CreatePullThroughCacheRule: 2-30 characters, lower-case path segments.
    repository_prefix: Annotated[str, worded(
        r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*",
        "must be '/'-separated parts of lower-case letters and digits, joined inside a part by "
        "single '.', '_' or '-'",
        min_length=2,
        max_length=30,
    )] | None = Field(
        None,
        description="ECR repository prefix of the cache (one rule per prefix per account and "
        "region). Unset: `<stack>/docker-hub`, so stacks sharing an account and region never "
        "claim the same rule.",
    )
    docker_hub_username: Annotated[str, worded(r"[a-z0-9]{4,30}", "Docker Hub user names are 4 to 30 lower-case letters and digits")] | None = Field(
        None,
        description="Docker Hub user whose access token (secret `docker_hub_access_token`) the "
        "cache uses: ECR's Docker Hub rules need credentials.",
    )

    @model_validator(mode="after")
    def _has_a_docker_hub_user(self) -> ImageCacheConfig:
        if self.enabled and self.docker_hub_username is None:
            raise RuleError(
                "docker_hub_username",
                None,
                "an ECR pull-through cache of Docker Hub needs Docker Hub credentials: set the "
                "user here and its access token with pulumi config set --secret "
                "tf-serving-eks:docker_hub_access_token <token> (or set enabled: false)",
            )
        return self


class ModelCacheConfig(Section):
    """A node-local cache of model versions shared by the serving pods of one node
    (components/model_cache.py): each version crosses from S3 once per node."""

    enabled: bool = Field(
        False,
        description="Fill a per-node cache from S3 once and copy each pod's versions from it "
        "(needs serving.gpu_pool on an AL2023 pool).",
    )
    size_gib: int = Field(
        50,
        ge=1,
        le=30000,
        description="Most disk the cache takes on a node; least recently used versions no pod "
        "serves are evicted beyond it. On the pool's instance store with "
        "gpu_pools.<pool>.instance_store: raid0, else on its EBS volume (disk_size_gib).",
    )


def cache_need_gib(models: Mapping[str, ModelConfig]) -> float:
    """Disk the versions of one node take in the cache: those of the stable and the canary
    pods, plus one more per model while a version switches (the new one is fetched before the
    old one is retired). Models without disk_gib are not counted."""
    return pod_copy_gib(models, canary_pod=True)


def pod_copy_gib(models: Mapping[str, ModelConfig], canary_pod: bool = False) -> float:
    """Disk one pod's own copies take (emptyDir), one more version per model while it switches."""
    return sum((m.disk_gib or 0) * m.versions_while_switching(canary_pod) for m in models.values())


SERVING_NAME_MAX = 58 - len("-canary-") - 10 - 1


class ServingConfig(Section):
    """The TF Serving workload."""

    env_defaults = {
        "replicas": _by_env(1, 2),
        "cpu": _by_env("2", "4"),
        "memory": _by_env("8Gi", "16Gi"),
        "pin_image_digests": _by_env(False, True),
    }
    # CPU serving runs on the system nodes (t3.large in dev, m7i.large otherwise: 2 vCPU,
    # 8 GiB), where the GPU-sized defaults above would never schedule; two pods of these
    # fit one beside the daemons, so the default autoscaling range fits the default group.
    cpu_serving_defaults: ClassVar[Mapping[str, str]] = {"cpu": "750m", "memory": "3Gi"}

    @model_validator(mode="before")
    @classmethod
    def _fill_cpu_serving_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("gpu_pool") is None:
            return {**cls.cpu_serving_defaults, **data}
        return data

    namespace: Name = Field("tf-serving", description="Namespace of the serving workload.")
    name: ServiceName = Field("tf-serving", description="Name of the Deployment, Service and friends.")
    image_version: Annotated[str, worded(r"2\.[0-9]+\.[0-9]+", "must be a tensorflow/serving 2.x release such as 2.19.1")] = Field(
        "2.19.1",
        description="tensorflow/serving release; `-gpu` is appended on GPU pools.",
    )
    pin_image_digests: bool = Field(
        description="Run images by digest (from components/image-digests.json, else resolved "
        "from the registry at deploy time), not by tag alone."
    )
    gpu_pool: Name | None = Field(
        None, description="GPU pool (key of gpu_pools) to run on. Unset: CPU serving."
    )
    gpus: int = Field(1, ge=1, le=8, description="GPUs per pod (on a GPU pool).")
    cpu: CpuQuantity = Field(
        description="CPU request (and limit) per pod, in cores or millicores (500m). Default on a "
        "GPU pool: 2 in dev, 4 otherwise; CPU serving: 750m."
    )
    memory: MemoryQuantity = Field(
        description="Memory request and limit per pod, in bytes with a unit (8Gi). Default on a "
        "GPU pool: 8Gi in dev, 16Gi otherwise; CPU serving: 3Gi."
    )
    replicas: int = Field(ge=1, le=100, description="Pods, when no autoscaler owns the count.")
    gpu_memory_fraction: float = Field(
        GPU_SHARE_OF_ONE_PROCESS,
        gt=0,
        le=1,
        description="Share of each GPU's memory TF Serving may allocate (per process). Unset: "
        f"{GPU_SHARE_OF_ONE_PROCESS} divided among the pods that share one GPU (the serving pool's "
        "time_slicing_replicas), rounded down to 0.01. Declared model sizes "
        "(models.<m>.gpu_memory_gib) must fit it.",
    )
    file_system_poll_seconds: int = Field(
        15, ge=1, le=3600, description="How often model folders are scanned for new versions."
    )
    startup_timeout_seconds: int = Field(
        900, ge=60, le=3600, description="Time a pod may take to load its models before it is restarted."
    )
    termination_grace_seconds: int = Field(
        60, ge=10, le=600, description="Time to drain in-flight requests on shutdown."
    )
    enable_warmup: bool = Field(
        True, description="Replay assets.extra/tf_serving_warmup_requests before serving."
    )
    cold_start_target_minutes: float | None = Field(
        None,
        gt=0,
        le=120,
        description="Time from zero GPU nodes to the first prediction that the stack aims "
        "for: the preview warns, naming the stage that dominates, when the modelled cold start "
        "of the serving pool exceeds it (README, Cold start budget).",
    )
    load_threads: int | None = Field(
        None,
        ge=1,
        le=32,
        description="Models TF Serving loads at once (--num_load_threads); default: one per "
        "model, at most one per CPU of the pod.",
    )

    @property
    def model_load_threads(self) -> int:
        """TF Serving's default, 0, loads servables one after another inside its manager's
        main loop, delaying the other models and requests (model_servers/main.cc, 2.19.1:
        num_load_threads); a pool lets several models load at once, no more than the CPUs
        that build their graphs."""
        if self.load_threads is not None:
            return self.load_threads
        return max(1, min(len(self.models), self.cpu_milli // 1000))
    batching: BatchingConfig = section("Server-side batching.")
    image_cache: ImageCacheConfig = section("ECR pull-through cache for the serving image.")
    model_cache: ModelCacheConfig = section("Node-local cache of model versions shared by a node's pods.")
    promotion_source: Annotated[str, worded(
        r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+",
        "must be a Pulumi stack reference org/project/stack (letters, digits, '_', '.', '-')",
    )] | None = Field(
        None,
        description="Stack promoted from (`org/project/stack`): its exported model versions "
        "are shown beside this stack's (output promotion_candidates).",
    )
    models: dict[Name, ModelConfig] = Field(
        min_length=1, description="Models to serve, keyed by model name."
    )

    @model_validator(mode="after")
    def _pod_names_whole(self) -> ServingConfig:
        # Queries pick the stable or the canary pods by pod name (serving.pod_name_regex);
        # Kubernetes cuts a generated name's base to 58 characters, and the canary pods' base
        # is `<name>-canary-<hash of up to 10>-` (apiserver/pkg/storage/names/generate.go).
        if len(self.name) > SERVING_NAME_MAX:
            raise RuleError(
                "name",
                self.name,
                f"must be at most {SERVING_NAME_MAX} characters, so the canary pods' names "
                "(<name>-canary-<10>-<5>) are not cut short by Kubernetes",
            )
        return self

    @model_validator(mode="after")
    def _model_cache_holds_the_versions(self) -> ServingConfig:
        cache = self.model_cache
        if not cache.enabled:
            return self
        if self.gpu_pool is None:
            raise RuleError(
                "model_cache.enabled",
                True,
                "the node-local model cache lives on a GPU pool's nodes: set serving.gpu_pool, "
                "or model_cache.enabled: false for CPU serving",
            )
        declared = {n: m for n, m in self.models.items() if m.disk_gib is not None}
        need = cache_need_gib(declared)
        if need > cache.size_gib:
            parts = ", ".join(
                f"{n} {m.disk_gib:g} GiB x {m.versions_while_switching(canary_pod=True)}" for n, m in sorted(declared.items())
            )
            raise RuleError(
                "model_cache.size_gib",
                cache.size_gib,
                f"the versions the pods of one node serve take {need:g} GiB ({parts}: stable "
                "and canary versions plus the one arriving during a switch), more than the "
                f"cache may hold; set size_gib to at least {math.ceil(need)}",
            )
        return self

    @model_validator(mode="after")
    def _namespace_is_ours_to_create(self) -> ServingConfig:
        problem = created_namespace_problem("namespace", self.namespace)
        if problem:
            raise problem
        return self

    @property
    def cpu_milli(self) -> int:
        return cpu_milli(self.cpu)

    @property
    def memory_mib(self) -> int:
        return memory_mib(self.memory)

    @property
    def pod_requests(self) -> catalog.Requests:
        """What one serving pod asks the scheduler for: TF Serving plus the model-sync init
        container and the model-sync sidecar (serving.pod_spec)."""
        sync = catalog.requests_of(catalog.MODEL_SYNC_RESOURCES)
        return catalog.pod_requests(
            [catalog.Requests(self.cpu_milli, self.memory_mib)], [(sync, False), (sync, True)]
        )

    @property
    def canary_pods(self) -> int:
        """Pods of the canary Deployment (one, when any model has a canary)."""
        return 1 if any(m.canary is not None for m in self.models.values()) else 0
