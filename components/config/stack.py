"""The root model: every stack key in one `StackConfig`, and the rules that need two keys
or more.

A rule that reads one section only belongs to that section's model, in the module named
after its key; this module must not grow single-section rules.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from components import catalog, validation
from components.config.autoscaling import AutoscalingConfig
from components.config.base import (
    PROJECT,
    Environment,
    Name,
    RuleError,
    Section,
    SwitchedOffIsAbsent,
    Tags,
    section,
)
from components.config.cluster import ClusterConfig
from components.config.gpu_pools import (
    GpuPoolConfig,
    GpuPools,
    karpenter_controller_replicas,
    pool_zone_problems,
    strict_zone_spread,
)
from components.config.ingress import ALB_RULES_PER_LOAD_BALANCER, IngressConfig, alb_listener_rules
from components.config.model_store import ModelStoreConfig
from components.config.monitoring import AlertThresholds, MonitoringConfig
from components.config.node_autoscaling import NodeAutoscalingConfig
from components.config.serving import GPU_SHARE_OF_ONE_PROCESS, ServingConfig, pod_copy_gib
from components.validation import worded

AwsRegion = Annotated[str, worded(
    r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d",
    "must be an AWS region code such as eu-west-1 or us-gov-west-1",
)]

# Framebuffer a CUDA context takes besides TF Serving's up-front allocation, in % of a GPU.
GPU_CONTEXT_HEADROOM_PERCENT = 3


class StackConfig(Section):
    """The whole stack: a section per key, and the rules that need two keys or more.

    A section's own rules, production ones included, are on its model; a top-level value
    without a section has its rules on its type (tags) or in a field validator here
    (secrets); the model validators here are those that read several keys.
    """

    environment: Environment = Field(
        description="dev, staging or prod: picks defaults and the production rules."
    )
    aws_region: AwsRegion = Field(
        alias="aws:region", description="AWS region (the AWS provider's own key)."
    )
    tags: Tags = Field(
        default_factory=dict, description="Extra tags on every AWS resource."
    )
    cluster: ClusterConfig = Field(description="The EKS cluster, created or existing.")
    gpu_pools: GpuPools = Field(
        default_factory=dict, description="GPU node pools keyed by a stable name (24 characters at most)."
    )
    node_autoscaling: NodeAutoscalingConfig = section("Node autoscaling (cluster-autoscaler).")
    model_store: ModelStoreConfig = section("S3 model repository.")
    serving: ServingConfig = Field(description="The TF Serving workload.")
    autoscaling: AutoscalingConfig = section("Pod autoscaling of the serving Deployment.")
    ingress: Annotated[IngressConfig | None, SwitchedOffIsAbsent] = Field(
        None,
        description="External REST and gRPC endpoints. Unset, or `{enabled: false}`: in-cluster only.",
    )
    ingress_api_key: SecretStr | None = Field(
        None, description="API key for access.require_api_key; set it with --secret."
    )
    grafana_admin_password: SecretStr | None = Field(
        None, description="Grafana admin password (--secret). Unset: a random one is generated."
    )
    alerting_secrets: dict[Name, SecretStr] = Field(
        default_factory=dict,
        description="Per receiver: Slack/webhook URL or PagerDuty routing key (--secret --path).",
    )
    docker_hub_access_token: SecretStr | None = Field(
        None, description="Docker Hub access token for serving.image_cache (--secret)."
    )
    monitoring: MonitoringConfig = section("Monitoring.")

    @field_validator(
        "ingress_api_key", "grafana_admin_password", "alerting_secrets", "docker_hub_access_token"
    )
    @classmethod
    def _secret_not_in_clear(cls, value: Any, info: ValidationInfo) -> Any:
        # parse_stack_config passes the keys Pulumi holds as secrets, when it knows them.
        secret_keys = (info.context or {}).get("secret_keys")
        is_set = bool(value) if info.field_name == "alerting_secrets" else value is not None
        if secret_keys is not None and is_set and f"{PROJECT}:{info.field_name}" not in secret_keys:
            raise RuleError(
                "",
                "(hidden)",
                "is in the stack file in clear; set it with `pulumi config set --secret`",
            )
        return value

    @field_validator("ingress_api_key")
    @classmethod
    def _api_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 20:
            raise RuleError("", "(hidden)", "must be at least 20 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _gpu_memory_fraction_from_the_pool(cls, data: Any) -> Any:
        """Unset, serving.gpu_memory_fraction is TF Serving's share of one GPU divided among
        the pods time-slicing puts on it (gpu_pools.<serving pool>.time_slicing_replicas):
        each process's BFC allocator takes its fraction of the whole GPU up front, so two pods
        at 0.9 on one GPU leave the second out of memory. Malformed input is left to the
        sections' own rules."""
        if not isinstance(data, dict):
            return data
        serving, pools = data.get("serving"), data.get("gpu_pools")
        if not isinstance(serving, dict) or "gpu_memory_fraction" in serving or not isinstance(pools, dict):
            return data
        pool = pools.get(serving.get("gpu_pool")) if isinstance(serving.get("gpu_pool"), str) else None
        shared = pool.get("time_slicing_replicas", 1) if isinstance(pool, dict) else 1
        if not isinstance(shared, int) or isinstance(shared, bool) or not 1 <= shared <= 16:
            return data
        fraction = math.floor(GPU_SHARE_OF_ONE_PROCESS / shared * 100) / 100
        return {**data, "serving": {**serving, "gpu_memory_fraction": fraction}}

    @model_validator(mode="after")
    def _sections_have_their_secrets(self) -> StackConfig:
        access = self.ingress.access if self.ingress else None
        if access and access.require_api_key and self.ingress_api_key is None:
            raise RuleError(
                "ingress_api_key",
                None,
                "access.require_api_key needs it: pulumi config set --secret "
                "tf-serving-eks:ingress_api_key <key>",
            )
        if self.serving.image_cache.enabled and self.docker_hub_access_token is None:
            raise RuleError(
                "docker_hub_access_token",
                None,
                "serving.image_cache needs it: pulumi config set --secret "
                "tf-serving-eks:docker_hub_access_token <token>",
            )
        return self

    @model_validator(mode="after")
    def _routes_fit_the_load_balancer(self) -> StackConfig:
        if self.ingress is None or not self.ingress.enabled:
            return self
        rules = alb_listener_rules(self.serving.models)
        if rules > ALB_RULES_PER_LOAD_BALANCER:
            raise RuleError(
                "serving.models",
                f"{len(self.serving.models)} models",
                f"the ingress would need {rules} ALB listener rules; an ALB takes "
                f"{ALB_RULES_PER_LOAD_BALANCER} (4 per model, 8 more per canary): serve fewer "
                "models or canaries behind this ingress",
            )
        return self

    @model_validator(mode="after")
    def _autoscaling_has_metrics_source(self) -> StackConfig:
        scaling = self.autoscaling
        custom = set(scaling.metrics) - {"cpu"}
        local_prometheus = self.monitoring.installs_prometheus
        if scaling.enabled and custom and scaling.prometheus_url is None and not local_prometheus:
            raise RuleError(
                "autoscaling.prometheus_url",
                None,
                f"metrics {sorted(custom)} come from Prometheus: enable monitoring "
                "(kube-prometheus-stack) or give its URL",
            )
        if scaling.enabled and "gpu_utilisation" in scaling.metrics and self.serving.gpu_pool is None:
            raise RuleError("autoscaling.metrics.gpu_utilisation", "...", "needs serving.gpu_pool")
        return self

    @model_validator(mode="after")
    def _receivers_have_secrets(self) -> StackConfig:
        for name, receiver in self.monitoring.receivers.items():
            if name not in self.alerting_secrets:
                raise RuleError(
                    f"monitoring.receivers.{name}",
                    receiver.type,
                    f"needs its URL or key: pulumi config set --secret --path "
                    f"'tf-serving-eks:alerting_secrets.{name}' <value>",
                )
        return self

    def zone_problems(self, zone_count: int) -> list[RuleError]:
        """Why the pools cannot be split over `zone_count` zones (one node group each)."""
        strict = strict_zone_spread(self.environment) and self.serving.gpu_pool is not None
        return pool_zone_problems(
            self.gpu_pools,
            zone_count,
            strict_pool=self.serving.gpu_pool if strict else None,
            strict_replicas=(
                self.autoscaling.max_replicas if self.autoscaling.enabled else self.serving.replicas
            ),
            pod_gpus=self.serving.gpus,
        )

    def node_daemons(self, gpu_node: bool) -> dict[str, catalog.Requests]:
        """The per-node daemons on a system node or a GPU node of this stack, by name."""
        return catalog.daemon_requests(
            gpu_node=gpu_node,
            logs=self.monitoring.logs.enabled,
            node_exporter=self.monitoring.enabled,
            model_cache=self.serving.model_cache.enabled,
        )

    @model_validator(mode="after")
    def _cpu_serving_fits_the_system_nodes(self) -> StackConfig:
        # Without a GPU pool the serving pods have no node selector and no toleration: in a
        # cluster we create they can land only on the system node group (GPU nodes are
        # tainted). An existing cluster's nodes are its owner's and unknown here.
        serving = self.serving
        if serving.gpu_pool is not None or self.cluster.mode != "create":
            return self
        group = self.cluster.system_node_group
        pod = serving.pod_requests
        daemons = self.node_daemons(gpu_node=False)
        most = self.autoscaling.max_replicas if self.autoscaling.enabled else serving.replicas
        for name in group.instance_types:
            instance = catalog.instance_type(name)
            if instance is None or name not in catalog.ENI_LIMITS:
                continue  # not in the catalogue: its capacity is not known here
            room = catalog.room_for_pods(instance, daemons)
            if not pod.fits(room):
                raise RuleError(
                    "serving",
                    {"cpu": serving.cpu, "memory": serving.memory},
                    f"CPU serving runs on the system nodes: the serving pod needs "
                    f"{catalog.describe_requests(pod)} (tf-serving plus its model-sync containers), "
                    f"{name} system nodes have {catalog.describe_room(room)} allocatable after EKS "
                    f"reservations and the per-node daemons ({', '.join(sorted(daemons))}); lower "
                    "serving.cpu / serving.memory, pick larger "
                    "cluster.system_node_group.instance_types, or set serving.gpu_pool",
                )
            capacity = catalog.pods_that_fit(pod, room) * group.max_size
            if most + serving.canary_pods > capacity:
                raise RuleError(
                    "cluster.system_node_group.max_size",
                    group.max_size,
                    f"{most} serving pod(s) plus {serving.canary_pods} canary do not fit "
                    f"{group.max_size} {name} system nodes ({capacity} serving pods at most, "
                    "before the cluster's controllers); raise max_size or use larger instance types",
                )
        return self

    @property
    def karpenter_pools(self) -> list[str]:
        return [name for name, pool in self.gpu_pools.items() if pool.uses_karpenter]

    @property
    def auto_mode_pools(self) -> list[str]:
        return [name for name, pool in self.gpu_pools.items() if pool.uses_auto_mode]

    @property
    def node_group_pools(self) -> list[str]:
        return [name for name, pool in self.gpu_pools.items() if pool.has_node_groups]

    @property
    def installs_cluster_autoscaler(self) -> bool:
        """cluster-autoscaler scales only the node groups this stack makes (components/nodes.py,
        AUTOSCALED_BY_TAG): a new cluster's system group and the managed-node-group GPU pools.
        On an existing cluster without such pools there are none (Karpenter and Auto Mode
        pools have no node group), and it is not installed."""
        return self.node_autoscaling.enabled and (self.cluster.mode == "create" or bool(self.node_group_pools))

    @model_validator(mode="after")
    def _auto_mode_has_its_cluster(self) -> StackConfig:
        pools = self.auto_mode_pools
        if not pools:
            return self
        if self.cluster.mode != "create":
            # Turning Auto Mode on changes the cluster itself (its compute, storage and load
            # balancing config, its IAM role's policies and trust: EKS user guide,
            # latest/ug/automode/auto-enable-existing.adoc): not ours to do to a cluster we
            # only look up.
            raise RuleError(
                f"gpu_pools.{pools[0]}.provisioner",
                "auto-mode",
                "needs cluster.mode create: EKS Auto Mode is switched on in the cluster's own "
                "settings and IAM role, which this stack does not change on an existing "
                "cluster; use provisioner karpenter or managed-node-group there",
            )
        if self.karpenter_pools:
            # Auto Mode brings its own NodePool and NodeClaim CRDs (karpenter.sh) and
            # controller; the karpenter-crd chart would claim the same CRDs. The guide
            # advises one or the other (latest/ug/automode/automode-learn-instances.adoc:
            # "AWS suggests running either EKS Auto Mode or self-managed Karpenter").
            raise RuleError(
                f"gpu_pools.{self.karpenter_pools[0]}.provisioner",
                "karpenter",
                f"pool '{pools[0]}' uses auto-mode, whose Karpenter owns the NodePool CRDs "
                "of the cluster; a stack uses karpenter or auto-mode pools, not both",
            )
        scaling = self.autoscaling
        pool = self.serving.gpu_pool
        if scaling.enabled and "gpu_utilisation" in scaling.metrics and pool in pools:
            raise RuleError(
                "autoscaling.metrics.gpu_utilisation",
                scaling.metrics["gpu_utilisation"],
                f"comes from the DCGM exporter, which does not run on EKS Auto Mode nodes "
                f"(pool '{pool}' uses auto-mode): scale on requests_per_second, latency or "
                "batch queueing instead",
            )
        return self

    @model_validator(mode="after")
    def _karpenter_has_a_home(self) -> StackConfig:
        # Karpenter must not run on nodes it launches (it would remove its own node: Karpenter
        # docs, getting-started "Install Karpenter"); we run it on the system node group. An
        # existing cluster's nodes are unknown here: the chart's own affinity (no
        # karpenter.sh/nodepool label) keeps it off Karpenter nodes, and Cluster checks the
        # discovery tags of its subnets and security group when it looks them up.
        pools = self.karpenter_pools
        if not pools or self.cluster.mode != "create":
            return self
        replicas = karpenter_controller_replicas(self.environment)
        group = self.cluster.system_node_group
        if group.max_size < replicas:
            raise RuleError(
                "cluster.system_node_group.max_size",
                group.max_size,
                f"pool '{pools[0]}' uses provisioner karpenter, whose {replicas} controllers run "
                f"on separate system nodes in {self.environment}: use at least {replicas}",
            )
        return self

    @model_validator(mode="after")
    def _serving_fits_its_pool(self) -> StackConfig:
        serving = self.serving
        if serving.gpu_pool is None:
            return self
        pool = self.gpu_pools.get(serving.gpu_pool)
        if pool is None:
            raise RuleError(
                "serving.gpu_pool",
                serving.gpu_pool,
                f"no such pool; gpu_pools has: {', '.join(sorted(self.gpu_pools)) or 'none'}",
            )
        pod = serving.pod_requests
        daemons = self.node_daemons(gpu_node=True)
        most = self.autoscaling.max_replicas if self.autoscaling.enabled else serving.replicas
        for instance in pool.instances:
            room = catalog.room_for_pods(instance, daemons)
            shown = {"gpus": serving.gpus, "cpu": serving.cpu, "memory": serving.memory}
            advertised = instance.gpus * pool.time_slicing_replicas
            if serving.gpus > advertised:
                raise RuleError(
                    "serving",
                    shown,
                    f"a pod does not fit pool '{serving.gpu_pool}': asks {serving.gpus} GPU(s) but "
                    f"{instance.name} offers {advertised}",
                )
            if not pod.fits(room):
                raise RuleError(
                    "serving",
                    shown,
                    f"a pod does not fit pool '{serving.gpu_pool}': the serving pod needs "
                    f"{catalog.describe_requests(pod)} (tf-serving plus its model-sync containers), "
                    f"{instance.name} nodes have {catalog.describe_room(room)} allocatable after "
                    f"EKS reservations and the per-node daemons ({', '.join(sorted(daemons))})",
                )
            by_gpu = pool.gpus_per_node // serving.gpus
            fitting = catalog.pods_that_fit(pod, room)
            if pool.time_slicing_replicas > 1 and fitting < by_gpu:
                raise RuleError(
                    "serving",
                    shown,
                    f"pool '{serving.gpu_pool}' shares each GPU between {pool.time_slicing_replicas} "
                    f"pods, so {by_gpu} serving pods land on each {instance.name} node and need "
                    f"{catalog.describe_requests(pod.times(by_gpu))}; the node has "
                    f"{catalog.describe_room(room)} allocatable after EKS reservations and the "
                    f"per-node daemons (room for {fitting}): lower serving.cpu / serving.memory "
                    "or time_slicing_replicas",
                )
            per_node = min(by_gpu, fitting)
            capacity = per_node * pool.max_size
            if most + serving.canary_pods > capacity and by_gpu > fitting:
                key = "autoscaling.max_replicas" if self.autoscaling.enabled else "serving.replicas"
                raise RuleError(
                    key,
                    most,
                    f"{most} serving pod(s) plus {serving.canary_pods} canary need more room than "
                    f"pool '{serving.gpu_pool}' has at max_size {pool.max_size}: CPU and memory "
                    f"let {per_node} pod(s) onto each {instance.name} node; raise "
                    f"gpu_pools.{serving.gpu_pool}.max_size",
                )
        scaling = self.autoscaling
        # The canary Deployment's pod runs on the same pool beside the stable ones.
        gpus_needed = serving.gpus * (most + serving.canary_pods)
        gpus_at_max = pool.gpus_per_node * pool.max_size
        if gpus_needed > gpus_at_max:
            canary = " (with the canary pod)" if serving.canary_pods else ""
            raise RuleError(
                "autoscaling.max_replicas" if scaling.enabled else "serving.replicas",
                most,
                f"needs {gpus_needed} GPU(s){canary} but pool '{serving.gpu_pool}' holds {gpus_at_max} at "
                f"max_size {pool.max_size}; raise gpu_pools.{serving.gpu_pool}.max_size",
            )
        if scaling.enabled:
            gpus_at_min = pool.gpus_per_node * pool.min_size
            if pool.min_size > 0 and serving.gpus * scaling.min_replicas > gpus_at_min:
                raise RuleError(
                    "autoscaling.min_replicas",
                    scaling.min_replicas,
                    f"needs {serving.gpus * scaling.min_replicas} GPU(s) but pool "
                    f"'{serving.gpu_pool}' holds {gpus_at_min} at min_size {pool.min_size}; "
                    "raise min_size, or set it to 0 to scale the pool from zero",
                )
        shared = pool.time_slicing_replicas
        self._declared_models_fit_a_gpu(pool)
        if serving.gpu_memory_fraction * shared > 1.0 + 1e-9:
            raise RuleError(
                "serving.gpu_memory_fraction",
                serving.gpu_memory_fraction,
                f"pool '{serving.gpu_pool}' shares each GPU between {shared} pods; the fraction "
                f"must be at most {1 / shared:.2f}",
            )
        # TF Serving's BFC allocator takes per_process_gpu_memory_fraction of each GPU up front,
        # so framebuffer use sits at fraction x pods per GPU plus the CUDA context (a few %)
        # on a healthy node: GPUMemoryNearlyFull must start above that, or it always fires.
        allocated = serving.gpu_memory_fraction * shared * 100
        limit = self.monitoring.thresholds.gpu_memory_percent
        highest = AlertThresholds.model_fields["gpu_memory_percent"].metadata
        ceiling = next(m.le for m in highest if hasattr(m, "le"))
        if self.monitoring.enabled and allocated + GPU_CONTEXT_HEADROOM_PERCENT > ceiling:
            # Above the highest threshold allowed the alert would fire on every healthy node.
            raise RuleError(
                "serving.gpu_memory_fraction",
                serving.gpu_memory_fraction,
                f"TF Serving would allocate {allocated:.0f}% of each GPU up front (x {shared} pod(s) "
                f"per GPU), which leaves GPUMemoryNearlyFull no threshold to start at (at most "
                f"{ceiling}%, and {GPU_CONTEXT_HEADROOM_PERCENT}% above the allocation); the fraction "
                f"must be at most {(ceiling - GPU_CONTEXT_HEADROOM_PERCENT) / 100 / shared:.2f}",
            )
        if self.monitoring.enabled and limit < allocated + GPU_CONTEXT_HEADROOM_PERCENT:
            raise RuleError(
                "monitoring.thresholds.gpu_memory_percent",
                limit,
                f"TF Serving allocates {allocated:.0f}% of each GPU up front (serving.gpu_memory_fraction "
                f"x {shared} pod(s) per GPU); the alert must start at "
                f"{allocated + GPU_CONTEXT_HEADROOM_PERCENT:.0f}% or above, else it fires on a healthy node",
            )
        return self

    @model_validator(mode="after")
    def _model_cache_fits_the_node_disk(self) -> StackConfig:
        """The node-local model cache lives on the serving pool's instance store (raid0) or
        its EBS volume: that disk must hold it beside what a node keeps anyway and the pods'
        own copies of their versions (declared disk_gib only)."""
        serving = self.serving
        if not serving.model_cache.enabled or serving.gpu_pool not in self.gpu_pools:
            return self
        pool = self.gpu_pools[serving.gpu_pool]
        if pool.uses_auto_mode:
            # Its folder-maker mounts a hostPath, and Auto Mode nodes are locked down
            # appliances whose host folders we do not manage (automode.adoc, "Nodes").
            raise RuleError(
                "serving.model_cache.enabled",
                True,
                f"pool '{serving.gpu_pool}' uses EKS Auto Mode, whose nodes' host folders this "
                "stack does not manage; use a managed-node-group or karpenter pool, or "
                "model_cache.enabled: false",
            )
        if pool.is_bottlerocket:
            raise RuleError(
                "serving.model_cache.enabled",
                True,
                f"pool '{serving.gpu_pool}' runs Bottlerocket; the cache's host folder is made for "
                "AL2023 nodes (the EBS root volume, or the instance store with "
                "instance_store: raid0): use an AL2023 pool or model_cache.enabled: false",
            )
        on_nvme = pool.instance_store == "raid0"
        disk_gib = pool.instance_store_gib if on_nvme else float(pool.disk_size_gib)
        reserve = catalog.NODE_DISK_RESERVE_GIB["instance_store" if on_nvme else "root_volume"]
        pods = min(
            max(1, instance.gpus * pool.time_slicing_replicas // serving.gpus) for instance in pool.instances
        )
        copies = pods * pod_copy_gib(serving.models, canary_pod=serving.canary_pods > 0)
        need = serving.model_cache.size_gib + reserve + copies
        if need > disk_gib + 1e-9:
            where = (
                f"the instance store of pool '{serving.gpu_pool}' ({disk_gib:.0f} GiB on its smallest type)"
                if on_nvme
                else f"gpu_pools.{serving.gpu_pool}.disk_size_gib ({pool.disk_size_gib} GiB)"
            )
            raise RuleError(
                "serving.model_cache.size_gib",
                serving.model_cache.size_gib,
                f"a node needs {need:.0f} GiB on {where}: the cache, {reserve} GiB for images and "
                f"the node's own files, and {copies:g} GiB for the model copies of {pods} pod(s); "
                + ("lower size_gib" if on_nvme else "raise disk_size_gib, use instance_store: raid0, or lower size_gib"),
            )
        return self

    def _declared_models_fit_a_gpu(self, pool: GpuPoolConfig) -> None:
        """The models a pod loads fit the share of one GPU TF Serving takes. TF Serving's
        AvailabilityPreservingPolicy (server.cc sets it; core/availability_preserving_policy.h)
        loads a model's new version before it unloads the old one, so each model may hold one
        version more than it serves while it switches; a canary pod also holds the canary
        version. Models without gpu_memory_gib are not counted."""
        serving = self.serving
        declared = {n: m for n, m in serving.models.items() if m.gpu_memory_gib is not None}
        if not declared:
            return
        gpu_gib = pool.instances[0].gpu_memory_gib
        usable = serving.gpu_memory_fraction * gpu_gib
        pods = [("stable", False)] + ([("canary", True)] if any(m.canary for m in serving.models.values()) else [])
        for pod, canary in pods:
            need = sum((m.gpu_memory_gib or 0) * m.versions_while_switching(canary) for m in declared.values())
            if need > usable + 1e-9:
                parts = ", ".join(
                    f"{n} {m.gpu_memory_gib:g} GiB x {m.versions_while_switching(canary)}" for n, m in sorted(declared.items())
                )
                raise RuleError(
                    "serving.gpu_memory_fraction",
                    serving.gpu_memory_fraction,
                    f"a {pod} pod holds {need:g} GiB of models on one GPU while a version switches "
                    f"({parts}: the versions served plus the one loading), but TF Serving may take "
                    f"{serving.gpu_memory_fraction:g} of the {gpu_gib} GiB of a {pool.gpu_model} "
                    f"({usable:.1f} GiB) in pool '{serving.gpu_pool}'; "
                    + (f"raise the fraction to at least {math.ceil(need / gpu_gib * 100) / 100:.2f}, "
                       if need < gpu_gib else "no share of this GPU holds them: ")
                    + "serve fewer versions, or use a pool with more GPU memory",
                )

    @model_validator(mode="after")
    def _production_replicas(self) -> StackConfig:
        # With autoscaling on, its own rule bounds min_replicas; off, serving.replicas counts.
        if self.environment == "prod" and not self.autoscaling.enabled and self.serving.replicas < 2:
            raise RuleError(
                "serving.replicas", self.serving.replicas, "prod needs at least 2 replicas"
            )
        return self

    @model_validator(mode="after")
    def _names_the_cluster_and_aws_accept(self) -> StackConfig:
        # Each section checks that its namespace is ours to create; two of them colliding
        # needs both.
        monitoring = self.monitoring
        if monitoring.installs_prometheus and self.serving.namespace == monitoring.namespace:
            raise RuleError(
                "monitoring.namespace",
                self.monitoring.namespace,
                "must differ from serving.namespace: the stack creates each, with its own "
                "pod security level",
            )
        if self.model_store.bucket_name is None:
            # The derived name (components/model_layout.py) must obey S3's rules too.
            from components.model_layout import model_bucket_name

            derived = model_bucket_name(self, "123456789012")
            try:
                validation.bucket_name(derived)
            except ValueError as exc:
                raise RuleError(
                    "model_store.bucket_name",
                    None,
                    f"unset, so the bucket is named after cluster.name ({derived.replace('123456789012', '<account id>')}), "
                    f"but {exc}; set model_store.bucket_name",
                ) from None
        return self

    @model_validator(mode="after")
    def _pools_divide_over_zones(self) -> StackConfig:
        # A new VPC has private subnets in az_count zones; an existing cluster's zones are
        # known only once its subnets are looked up (checked then, see check_pool_zones).
        if self.cluster.mode == "create":
            problems = self.zone_problems(self.cluster.vpc.az_count)
            if problems:
                raise problems[0]
        return self
