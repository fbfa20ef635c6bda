"""The `serving` stack key: the TensorFlow Serving workload (namespace, config files,
Deployment, Service, PDB, NetworkPolicy; a canary Deployment and Service beside them when a
model has a canary), with models delivered by the model-sync containers (model_sync.py).

It makes Kubernetes objects only: it must not create AWS resources (it reads the model
store's and the image cache's outputs), and routes, scaling and monitoring of the pods belong
to their own components.

Every config file TF Serving reads is produced by a pure function from the stack config,
in TF Serving's protobuf text format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.config import (
    CANARY_LABEL,
    GpuPoolConfig,
    PROJECT,
    BatchingConfig,
    ModelConfig,
    ServingConfig,
    strict_zone_spread,
)
from components.gpu_pools import GPU_RESOURCE, GpuScheduling
from components.image_cache import ImageCacheOutputs
from components.images import Image, digest_for, pinned
from components.model_store import ModelStoreOutputs
from components.model_sync import (
    POD_IDENTITY_AGENT_CIDR,
    model_sync_containers,
    model_sync_specs,
    sync_config_data,
    sync_image,
)
from components.naming import k8s_labels
from components import model_cache, podsecurity
from components.podsecurity import restricted_container

GRPC_PORT = 8500
REST_PORT = 8501
MODEL_ROOT = "/models"
CONFIG_DIR = "/etc/tf-serving"
METRICS_PATH = "/monitoring/prometheus/metrics"
# Above 10000: no clash with a host account if a container ever escapes (CIS 5.2.6;
# checkov CKV_K8S_40). The image runs as any UID: it writes only to /tmp and reads /models.
SERVING_UID = 10001
PRE_STOP_SLEEP_SECONDS = 15
PRIORITY_CLASS_VALUE = 1_000_000
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
# Karpenter leaves a node alone while a pod on it carries this annotation with a Go duration
# that has not elapsed since the pod's status.startTime (kubernetes-sigs/karpenter v1.14.1
# pkg/utils/pod/scheduling.go IsDoNotDisruptActive; website v1.14 concepts/disruption.md,
# "Pod-Level Controls"): consolidation and drift then wait, interruption and expiry do not.
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
# status.startTime is when the kubelet took the pod, before the image pull and the model-sync
# init container: on a new GPU node the ~6 GB serving image takes 1-2 minutes (README, "GPU
# node pools", cold start) and the models' first download a few more. The window covers that
# allowance plus the startup probe's whole budget (serving.startup_timeout_seconds).
NEW_POD_DELIVERY_ALLOWANCE_SECONDS = 600
# Provisioners whose nodes Karpenter removes and replaces (EKS Auto Mode runs Karpenter).
KARPENTER_PROVISIONERS = ("karpenter", "auto-mode")


@dataclass(frozen=True)
class ServingOutputs:
    namespace: str
    name: str
    service_name: str
    selector: dict[str, str]
    grpc_port: int
    rest_port: int
    metrics_path: str
    deployment: k8s.apps.v1.Deployment
    model_names: list[str]
    # Canary pods behind their own Service, and each canaried model's traffic share (%).
    canary_service: str | None = None
    canary_weights: dict[str, int] = field(default_factory=dict)
    # Each canaried model's canary version: only the canary pods load it.
    canary_versions: dict[str, int] = field(default_factory=dict)


def serving_image(cfg: ServingConfig) -> Image:
    suffix = "-gpu" if cfg.gpu_pool else ""
    return Image("docker.io", "tensorflow/serving", f"{cfg.image_version}{suffix}")


def image(cfg: ServingConfig, mirror: pulumi.Input[str] | None = None) -> pulumi.Input[str]:
    """The server's image: by digest where the stack pins them, through the pull-through
    cache where there is one (same repository path, same digest)."""
    wanted = serving_image(cfg)
    digest = digest_for(wanted) if cfg.pin_image_digests else None
    if mirror is None:
        return wanted.reference(digest)
    return pulumi.Output.from_input(mirror).apply(lambda m: wanted.reference(digest, mirror=m))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_config_text(models: Mapping[str, ModelConfig], model_root: str = MODEL_ROOT) -> str:
    """TF Serving's --model_config_file (a ModelServerConfig in protobuf text format)."""
    lines = ["model_config_list {"]
    for name, model in sorted(models.items()):
        lines += [
            "  config {",
            f"    name: {_quote(name)}",
            f"    base_path: {_quote(f'{model_root}/{name}')}",
            '    model_platform: "tensorflow"',
            "    model_version_policy {",
        ]
        if model.version_policy == "latest":
            lines.append(f"      latest {{ num_versions: {model.latest_count} }}")
        else:
            lines.append("      specific {")
            lines += [f"        versions: {v}" for v in sorted(model.versions)]
            lines.append("      }")
        lines.append("    }")
        for label, version in sorted(model.labels.items()):
            lines += [
                "    version_labels {",
                f"      key: {_quote(label)}",
                f"      value: {version}",
                "    }",
            ]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def batching_parameters_text(batching: BatchingConfig, threads: int) -> str:
    """TF Serving's --batching_parameters_file (BatchingParameters, protobuf text format).

    Online GPU serving per TF Serving's batching guide: threads = CPU cores, a short batch
    timeout to bound added latency, a bounded queue so overload fails fast.
    """
    return (
        f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}\n"
        f"max_enqueued_batches {{ value: {batching.max_enqueued_batches} }}\n"
        f"num_batch_threads {{ value: {batching.num_batch_threads or threads} }}\n"
        "pad_variable_length_inputs: true\n"
    )


def monitoring_config_text(path: str = METRICS_PATH) -> str:
    """TF Serving's --monitoring_config_file: Prometheus metrics on the REST port."""
    return f"prometheus_config {{\n  enable: true\n  path: {_quote(path)}\n}}\n"


def pod_cpus(cfg: ServingConfig) -> int:
    return max(1, cfg.cpu_milli // 1000)


def server_args(cfg: ServingConfig) -> list[str]:
    threads = pod_cpus(cfg)
    args = [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={CONFIG_DIR}/models.config",
        # TF Serving assigns version labels before it loads any version: without this flag
        # the first config with a label is refused and the server exits (server_core.cc,
        # ReloadConfig -> UpdateModelVersionLabelMap before AddModelsViaModelConfigList;
        # g3doc/serving_config.md "Assigning labels"). Always on, so the args can never
        # disagree with whatever labels the config file holds; it has no effect without one.
        "--allow_version_labels_for_unavailable_models=true",
        # No --model_config_file_poll_wait_seconds: the config is read once at start. A live
        # reload that moves a label to a version not yet loaded is refused, and the refused
        # config is kept, so that version never loads (server_core.cc ReloadConfig sets config_
        # before UpdateModelVersionLabelMap fails). Config changes roll the pods instead.
        f"--file_system_poll_wait_seconds={cfg.file_system_poll_seconds}",
        f"--monitoring_config_file={CONFIG_DIR}/monitoring.config",
        f"--tensorflow_intra_op_parallelism={threads}",
        f"--tensorflow_inter_op_parallelism={threads}",
        f"--rest_api_num_threads={max(4, threads * 2)}",
        f"--enable_model_warmup={'true' if cfg.enable_warmup else 'false'}",
        # Loads (and unloads) in their own threads, not in the manager's main loop (main.cc
        # num_load_threads / num_unload_threads, default 0: serially in that loop).
        f"--num_load_threads={cfg.model_load_threads}",
        f"--num_unload_threads={cfg.model_load_threads}",
    ]
    if cfg.batching.enabled:
        args += ["--enable_batching=true", f"--batching_parameters_file={CONFIG_DIR}/batching.config"]
    if cfg.gpu_pool:
        args.append(f"--per_process_gpu_memory_fraction={cfg.gpu_memory_fraction}")
    return args


def config_files(cfg: ServingConfig, models: Mapping[str, ModelConfig]) -> dict[str, str]:
    return {
        "models.config": model_config_text(models),
        "batching.config": batching_parameters_text(cfg.batching, pod_cpus(cfg)),
        "monitoring.config": monitoring_config_text(),
    }


# pulumi-kubernetes waits for a Deployment to be Available and for a Service with a selector
# to have a ready endpoint, 10 minutes by default (provider/pkg/await/awaiters.go,
# deployment.go, service.go). Serving pods are Ready only once every model is published
# to the store and loaded on a GPU node that may still be coming up: neither happens
# within the `pulumi up` that creates the bucket. Their readiness is watched by alerts and
# the `serving_rollout_check` output instead.
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def scanner_exceptions(cfg: ServingConfig) -> dict[str, str]:
    """The checkov rules the serving Deployment does not meet, each with its reason, in
    checkov's own skip annotation (checkov docs, "Suppressing and skipping policies")."""
    reasons = [
        "CKV_K8S_15=imagePullPolicy IfNotPresent: the image is pinned (by digest where "
        "serving.pin_image_digests is on) and ~6 GB, so each GPU pod start must not pull again"
    ]
    if not cfg.pin_image_digests:
        reasons.append(
            "CKV_K8S_43=serving.pin_image_digests is off for this stack: it runs pinned tags; "
            "prod runs digests"
        )
    return {f"checkov.io/skip{i}": reason for i, reason in enumerate(reasons, start=1)}


def content_name(prefix: str, data: Mapping[str, str]) -> str:
    """A ConfigMap name that changes with its content (`<prefix>-<10 hex>`).

    A running pod's config must never change under it: TF Serving refuses a live label
    move to a version it has not loaded, and the sync sidecar would retire the versions
    the old server still serves. A new name per content makes every change a new,
    immutable ConfigMap and a rolling update through readiness (the kustomize
    configMapGenerator pattern)."""
    digest = hashlib.sha256(json.dumps(dict(sorted(data.items()))).encode()).hexdigest()
    return f"{prefix}-{digest[:10]}"


# The names Kubernetes gives a Deployment's pods: `<deployment>-<pod-template-hash>-<5 chars>`.
# The ReplicaSet is `<deployment>-<hash>` with the hash rand.SafeEncodeString(fnv32a of the
# template) (pkg/controller/deployment/sync.go getNewReplicaSet; pkg/controller/controller_utils.go
# ComputeHash), 1 to 10 characters of k8s.io/apimachinery/pkg/util/rand's alphabet; the pod's
# generateName `<replicaset>-` gets 5 random characters of the same alphabet
# (apiserver/pkg/storage/names/generate.go SimpleNameGenerator), after its base is cut to 58
# characters (serving.name's length rule keeps ours whole).
POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH_MAX = 10
GENERATED_POD_NAME_BASE_MAX = 58


def pod_name_regex(workload: str) -> str:
    """A PromQL (RE2, fully anchored) regex matching the pods of Deployment `workload` and no
    other: `tf-serving-.*` would also match the pods of `tf-serving-canary`."""
    chars = f"[{POD_NAME_ALPHABET}]"
    return f"{workload}-{chars}{{1,{POD_TEMPLATE_HASH_MAX}}}-{chars}{{5}}"


def canary_workload(workload: str) -> str:
    """The canary Deployment (and Service) beside the stable `workload`."""
    return f"{workload}-canary"


def selector_labels(workload: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": workload, "app.kubernetes.io/component": "serving"}


# Every serving pod, stable and canary (NetworkPolicy, monitoring).
ALL_SERVING_PODS = {"app.kubernetes.io/component": "serving", "app.kubernetes.io/part-of": PROJECT}


def canary_models(models: Mapping[str, ModelConfig]) -> dict[str, ModelConfig]:
    """What the canary pods load: each canaried model's versions plus its canary version,
    labelled `canary`; other models as the stable pods have them."""
    out: dict[str, ModelConfig] = {}
    for name, model in models.items():
        if model.canary is None:
            out[name] = model
            continue
        out[name] = model.model_copy(
            update={
                "versions": sorted({*model.versions, model.canary.version}),
                "labels": {**model.labels, CANARY_LABEL: model.canary.version},
            }
        )
    return out


def canary_weights(models: Mapping[str, ModelConfig]) -> dict[str, int]:
    return {name: m.canary.weight for name, m in sorted(models.items()) if m.canary is not None}


def serving_container(
    cfg: ServingConfig, image_mirror: pulumi.Input[str] | None = None
) -> k8s.core.v1.ContainerArgs:
    limits = {"cpu": cfg.cpu, "memory": cfg.memory}
    if cfg.gpu_pool:
        limits[GPU_RESOURCE] = str(cfg.gpus)
    # Loads can take minutes (big models, warmup): only the startup probe waits for them;
    # liveness starts after it and just checks the server still answers.
    startup_period = 10
    return k8s.core.v1.ContainerArgs(
        name="tf-serving",
        image=image(cfg, image_mirror),
        image_pull_policy="IfNotPresent",
        command=["/usr/bin/tensorflow_model_server"],
        args=server_args(cfg),
        ports=[
            k8s.core.v1.ContainerPortArgs(name="grpc", container_port=GRPC_PORT, protocol="TCP"),
            k8s.core.v1.ContainerPortArgs(name="http", container_port=REST_PORT, protocol="TCP"),
        ],
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": cfg.cpu, "memory": cfg.memory}, limits=limits
        ),
        startup_probe=k8s.core.v1.ProbeArgs(
            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="http"),
            period_seconds=startup_period,
            failure_threshold=cfg.startup_timeout_seconds // startup_period,
        ),
        readiness_probe=k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(
                path=f"/v1/models/{sorted(cfg.models)[0]}", port="http"
            ),
            period_seconds=5,
            failure_threshold=2,
        ),
        liveness_probe=k8s.core.v1.ProbeArgs(
            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="grpc"),
            period_seconds=15,
            timeout_seconds=5,
            failure_threshold=4,
        ),
        lifecycle=k8s.core.v1.LifecycleArgs(
            # Let the load balancer deregister the pod before the server stops accepting.
            pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                sleep=k8s.core.v1.SleepActionArgs(seconds=PRE_STOP_SLEEP_SECONDS)
            )
        ),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="models", mount_path=MODEL_ROOT, read_only=True),
            k8s.core.v1.VolumeMountArgs(name="tf-serving-config", mount_path=CONFIG_DIR, read_only=True),
            k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
        ],
        security_context=restricted_container(SERVING_UID),
    )


def topology_spread(workload: str, strict_zones: bool) -> list[k8s.core.v1.TopologySpreadConstraintArgs]:
    selector = k8s.meta.v1.LabelSelectorArgs(match_labels=selector_labels(workload))
    return [
        k8s.core.v1.TopologySpreadConstraintArgs(
            topology_key="topology.kubernetes.io/zone",
            max_skew=1,
            when_unsatisfiable="DoNotSchedule" if strict_zones else "ScheduleAnyway",
            label_selector=selector,
        ),
        k8s.core.v1.TopologySpreadConstraintArgs(
            topology_key="kubernetes.io/hostname",
            max_skew=1,
            when_unsatisfiable="ScheduleAnyway",
            label_selector=selector,
        ),
    ]


@dataclass(frozen=True)
class PodPlacement:
    """What the stable and the canary pods share beyond their config: where they may run,
    the store they sync from, and their identity and priority."""

    gpu_scheduling: Mapping[str, GpuScheduling]
    store: ModelStoreOutputs
    region: str
    service_account: str
    priority_class: str
    strict_zones: bool
    image_mirror: pulumi.Input[str] | None = None
    # What makes the nodes of `serving.gpu_pool` (None on CPU).
    provisioner: str | None = None
    # The node-local model cache's claim, when serving.model_cache is on.
    cache_claim: str | None = None


def loading_window_seconds(cfg: ServingConfig) -> int:
    """From the kubelet taking a pod to its models being loaded, at the most we allow: the
    image and model delivery allowance plus the startup probe's budget."""
    return NEW_POD_DELIVERY_ALLOWANCE_SECONDS + cfg.startup_timeout_seconds


def pod_annotations(cfg: ServingConfig, provisioner: str | None) -> dict[str, str] | None:
    """On nodes Karpenter manages, the pods ask it not to consolidate or drift their node while
    they may still be loading (a move restarts a load of minutes); after that window the node
    is Karpenter's again, so a permanent "true" never blocks consolidation or AMI updates."""
    if provisioner not in KARPENTER_PROVISIONERS:
        return None
    return {DO_NOT_DISRUPT: f"{loading_window_seconds(cfg)}s"}


def gpu_scheduling_for(cfg: ServingConfig, pools: Mapping[str, GpuScheduling]) -> GpuScheduling | None:
    """The scheduling contract of `serving.gpu_pool`, None when serving runs on CPU: like every
    other GPU decision of the pods, it follows that one setting."""
    return pools[cfg.gpu_pool] if cfg.gpu_pool else None


def pod_spec(
    cfg: ServingConfig,
    placement: PodPlacement,
    *,
    workload: str,
    config_map: str,
    sync_config_map: str,
) -> k8s.core.v1.PodSpecArgs:
    gpu = gpu_scheduling_for(cfg, placement.gpu_scheduling)
    sync_init, sync_sidecar = model_sync_containers(
        image=pinned(sync_image(), by_digest=cfg.pin_image_digests),
        bucket=placement.store.bucket_name,
        prefix=placement.store.prefix,
        region=placement.region,
        model_root=MODEL_ROOT,
        model_volume="models",
        config_volume="model-sync",
        tmp_volume="sync-tmp",
        rest_port=REST_PORT,
        cache_volume=model_cache.VOLUME_NAME if placement.cache_claim else None,
        cache_mount=model_cache.CACHE_MOUNT,
        cache_env=model_cache.sync_env(cfg.model_cache) if placement.cache_claim else (),
    )
    cache_volumes = (
        [
            k8s.core.v1.VolumeArgs(
                name=model_cache.VOLUME_NAME,
                persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                    claim_name=placement.cache_claim
                ),
            )
        ]
        if placement.cache_claim
        else []
    )
    return k8s.core.v1.PodSpecArgs(
        service_account_name=placement.service_account,
        # Pod Identity and IRSA mount their own projected token; nothing else needs the API.
        automount_service_account_token=False,
        priority_class_name=placement.priority_class,
        termination_grace_period_seconds=cfg.termination_grace_seconds,
        security_context=k8s.core.v1.PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=SERVING_UID,
            run_as_group=SERVING_UID,
            fs_group=SERVING_UID,
            # The node cache's volume takes fsGroup; once its root is right, the kubelet does
            # not walk every cached file again at each pod's mount (KEP 695).
            fs_group_change_policy="OnRootMismatch" if placement.cache_claim else None,
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        node_selector=gpu.node_selector if gpu else None,
        tolerations=[
            k8s.core.v1.TolerationArgs(
                key=t["key"], operator=t["operator"], value=t["value"], effect=t["effect"]
            )
            for t in gpu.tolerations
        ]
        if gpu
        else None,
        topology_spread_constraints=topology_spread(workload, placement.strict_zones),
        init_containers=[sync_init, sync_sidecar],
        containers=[serving_container(cfg, placement.image_mirror)],
        volumes=[
            k8s.core.v1.VolumeArgs(name="models", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
            k8s.core.v1.VolumeArgs(
                name="tf-serving-config",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=config_map),
            ),
            k8s.core.v1.VolumeArgs(
                name="model-sync",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                    name=sync_config_map, default_mode=0o555
                ),
            ),
            k8s.core.v1.VolumeArgs(
                name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="1Gi")
            ),
            k8s.core.v1.VolumeArgs(
                name="sync-tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="1Gi")
            ),
            *cache_volumes,
        ],
    )


def network_policy_spec(
    cfg: ServingConfig, load_balancer_cidrs: list[str], monitoring_namespace: str | None
) -> k8s.networking.v1.NetworkPolicySpecArgs:
    """Ingress: load balancer subnets to both ports, monitoring to metrics. Egress: DNS, the
    Pod Identity agent, and HTTPS outside private ranges (S3 and STS have no fixed IPs).

    A rule is written only for a peer that exists: an ingress rule whose `from` is empty
    admits every source (Kubernetes NetworkPolicyIngressRule: "If this field is empty or
    missing, this rule matches all sources"), and a namespace the stack does not run
    monitoring in must not be admitted."""
    ports = [
        k8s.networking.v1.NetworkPolicyPortArgs(port=GRPC_PORT, protocol="TCP"),
        k8s.networking.v1.NetworkPolicyPortArgs(port=REST_PORT, protocol="TCP"),
    ]
    ingress = []
    if load_balancer_cidrs:
        ingress.append(
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                from_=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr))
                    for cidr in load_balancer_cidrs
                ],
                ports=ports,
            )
        )
    if monitoring_namespace:
        ingress.append(
            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                from_=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_labels={"kubernetes.io/metadata.name": monitoring_namespace}
                        )
                    )
                ],
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=REST_PORT, protocol="TCP")],
            )
        )
    return k8s.networking.v1.NetworkPolicySpecArgs(
        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=ALL_SERVING_PODS),
        policy_types=["Ingress", "Egress"],
        ingress=ingress,
        egress=[
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_labels={"kubernetes.io/metadata.name": "kube-system"}
                        ),
                        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"k8s-app": "kube-dns"}),
                    )
                ],
                ports=[
                    k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol="UDP"),
                    k8s.networking.v1.NetworkPolicyPortArgs(port=53, protocol="TCP"),
                ],
            ),
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        ip_block=k8s.networking.v1.IPBlockArgs(cidr=POD_IDENTITY_AGENT_CIDR)
                    )
                ],
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=80, protocol="TCP")],
            ),
            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                to=[
                    k8s.networking.v1.NetworkPolicyPeerArgs(
                        ip_block=k8s.networking.v1.IPBlockArgs(cidr="0.0.0.0/0", except_=PRIVATE_RANGES)
                    )
                ],
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=443, protocol="TCP")],
            ),
        ],
    )


def _meta(
    cfg: ServingConfig, labels: Mapping[str, str], name: str, annotations: Mapping[str, pulumi.Input[str]] | None = None
) -> k8s.meta.v1.ObjectMetaArgs:
    """Metadata of a namespaced serving object."""
    return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=cfg.namespace, labels=labels, annotations=annotations)


class TfServing(pulumi.ComponentResource):
    outputs: ServingOutputs

    def __init__(
        self,
        name: str,
        cfg: ServingConfig,
        *,
        environment: str,
        gpu_scheduling: Mapping[str, GpuScheduling],
        store: ModelStoreOutputs,
        region: str,
        load_balancer_cidrs: pulumi.Input[list[str]],
        provider: k8s.Provider,
        replicas: int | None,
        monitoring_namespace: str | None,
        image_cache: ImageCacheOutputs | None = None,
        gpu_provisioner: str | None = None,
        gpu_pool: GpuPoolConfig | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`gpu_scheduling`: every GPU pool's scheduling contract, by pool name; the pods
        follow the one of `serving.gpu_pool`, whose nodes `gpu_provisioner` makes."""
        super().__init__("tf-serving-eks:serving:TfServing", name, None, opts)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = k8s_labels("serving", cfg.name)
        ns = cfg.namespace

        # Every container of ours runs under restricted_container: the strictest standard holds.
        namespace = podsecurity.namespace(
            f"{name}-namespace", ns, component="serving", level="restricted", opts=k8s_child
        )
        in_ns = pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(depends_on=[namespace]))
        annotations = (
            {"eks.amazonaws.com/role-arn": store.reader_role_arn} if store.identity == "irsa" else None
        )
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=_meta(cfg, labels, cfg.name, annotations),
            automount_service_account_token=False,
            opts=in_ns,
        )
        priority_class = k8s.scheduling.v1.PriorityClass(
            f"{name}-priority",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{cfg.name}-{ns}", labels=labels),
            value=PRIORITY_CLASS_VALUE,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="TF Serving pods: placed before batch and best-effort work.",
            opts=k8s_child,
        )
        cache = None
        if cfg.model_cache.enabled and gpu_pool is not None and cfg.gpu_pool:
            cache = model_cache.ModelCache(
                f"{name}-model-cache",
                cfg.model_cache,
                pool_name=cfg.gpu_pool,
                pool=gpu_pool,
                scheduling=gpu_scheduling[cfg.gpu_pool],
                serving_namespace=namespace,
                serving_namespace_name=ns,
                pin_digests=cfg.pin_image_digests,
                opts=k8s_child,
            ).outputs
        placement = PodPlacement(
            cache_claim=cache.claim_name if cache else None,
            gpu_scheduling=gpu_scheduling,
            store=store,
            region=region,
            service_account=cfg.name,
            priority_class=f"{cfg.name}-{ns}",
            strict_zones=strict_zone_spread(environment),
            image_mirror=image_cache.mirror if image_cache else None,
            provisioner=gpu_provisioner,
        )
        # Pods pull through the cache only once its rule and node permissions exist, and reach
        # S3 only once their identity does.
        pods_wait_for: list[pulumi.Resource] = [
            service_account,
            priority_class,
            *store.reader_ready,
            *(image_cache.pull_ready if image_cache else ()),
            *(cache.ready if cache else ()),
        ]
        weights = canary_weights(cfg.models)
        workloads: list[tuple[str, str, Mapping[str, ModelConfig], int | None]] = [
            ("", cfg.name, cfg.models, replicas)
        ]
        if weights:
            # One replica is enough for a share of the traffic; the HPA scales the stable pods.
            workloads.append(("-canary", canary_workload(cfg.name), canary_models(cfg.models), 1))
        deployments = [
            self._workload(
                f"{name}{suffix}",
                workload,
                cfg,
                models,
                replicas=count,
                labels=labels,
                placement=placement,
                opts=in_ns,
                depends_on=pods_wait_for,
            )
            for suffix, workload, models, count in workloads
        ]
        selector = selector_labels(cfg.name)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=_meta(cfg, labels, cfg.name),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=in_ns,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=_meta(cfg, labels, cfg.name),
            spec=pulumi.Output.from_input(load_balancer_cidrs).apply(
                lambda cidrs: network_policy_spec(cfg, cidrs, monitoring_namespace)
            ),
            opts=in_ns,
        )
        self.outputs = ServingOutputs(
            namespace=ns,
            name=cfg.name,
            service_name=cfg.name,
            selector=selector,
            grpc_port=GRPC_PORT,
            rest_port=REST_PORT,
            metrics_path=METRICS_PATH,
            deployment=deployments[0],
            model_names=sorted(cfg.models),
            canary_service=canary_workload(cfg.name) if weights else None,
            canary_weights=weights,
            canary_versions={n: m.canary.version for n, m in cfg.models.items() if m.canary is not None},
        )
        self.register_outputs({"namespace": ns, "service": cfg.name})

    def _workload(
        self,
        name: str,
        workload: str,
        cfg: ServingConfig,
        models: Mapping[str, ModelConfig],
        *,
        replicas: int | None,
        labels: Mapping[str, str],
        placement: PodPlacement,
        opts: pulumi.ResourceOptions,
        depends_on: list[pulumi.Resource],
    ) -> k8s.apps.v1.Deployment:
        """Config files, model sync config, Deployment and Service of one set of pods."""
        server_files = config_files(cfg, models)
        sync_files = sync_config_data(model_sync_specs(models))
        config_name = content_name(f"{workload}-config", server_files)
        sync_name = content_name(f"{workload}-model-sync", sync_files)
        config = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=_meta(cfg, labels, config_name), data=server_files, immutable=True, opts=opts
        )
        sync_config = k8s.core.v1.ConfigMap(
            f"{name}-model-sync", metadata=_meta(cfg, labels, sync_name), data=sync_files, immutable=True, opts=opts
        )
        selector = selector_labels(workload)
        pod_labels = {**labels, **selector}
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=_meta(cfg, labels, workload, {**SKIP_AWAIT, **scanner_exceptions(cfg)}),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=pod_labels, annotations=pod_annotations(cfg, placement.provisioner)
                    ),
                    spec=pod_spec(
                        cfg, placement, workload=workload, config_map=config_name, sync_config_map=sync_name
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[*depends_on, config, sync_config])
            ),
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=_meta(cfg, labels, workload, SKIP_AWAIT),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=selector,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="grpc", port=GRPC_PORT, target_port="grpc", protocol="TCP",
                        app_protocol="kubernetes.io/h2c",
                    ),
                    k8s.core.v1.ServicePortArgs(
                        name="http", port=REST_PORT, target_port="http", protocol="TCP"
                    ),
                ],
            ),
            opts=opts,
        )
        return deployment
