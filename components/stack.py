"""The whole stack: components in dependency order, and the stack outputs.

The one place that exports stack outputs and wires one component's outputs into another; it must
not build resources itself beyond the AWS provider.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from components import cold_start
from components.auto_mode import AutoModePools
from components.autoscaling import Autoscaling
from components.catalog import PRICED_REGIONS, monthly_cost_range, node_cost_range
from components.cluster import Cluster, existing_cluster_needs
from components.config import StackConfig, check_pool_zones, load_stack_config
from components.gpu_pools import GpuPools
from components.image_cache import ImageCache
from components.ingress import Ingress, IngressOutputs
from components.karpenter import Karpenter
from components.logs import ClusterLogs
from components.model_layout import model_bucket_name
from components.model_store import ModelStore
from components.monitoring import Monitoring, PrometheusStack, PrometheusStackOutputs
from components.naming import base_tags
from components.node_autoscaling import NodeAutoscaler
from components.serving import TfServing


def build_stack(cfg: StackConfig) -> dict[str, Any]:
    """Create every component for `cfg`; return the stack outputs."""
    aws_provider = aws.Provider(
        "aws",
        region=cfg.aws_region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=base_tags(cfg, pulumi.get_stack())),
    )
    invoke = pulumi.InvokeOptions(provider=aws_provider)
    account_id = aws.get_caller_identity(opts=invoke).account_id
    partition = aws.get_partition(opts=invoke).partition

    extra_outputs: dict[str, Any] = {}
    # Charts' ServiceMonitors: on with monitoring, with the labels our Prometheus selects on.
    chart_monitors = dict(cfg.monitoring.rule_labels) if cfg.monitoring.enabled else None
    cluster = Cluster(
        "cluster",
        cfg.cluster,
        region=cfg.aws_region,
        partition=partition,
        account_id=account_id,
        aws_provider=aws_provider,
        needs=existing_cluster_needs(cfg),
        karpenter=bool(cfg.karpenter_pools),
        auto_mode=bool(cfg.auto_mode_pools),
        opts=pulumi.ResourceOptions(providers=[aws_provider]),
    ).outputs
    # An existing cluster's zones are known only now: refuse pools they cannot split before
    # anything else is created.
    check_pool_zones(cfg, pulumi.get_stack(), list(cluster.private_subnet_ids_by_zone))
    # The Prometheus Operator's CRDs come first: several charts below ship ServiceMonitors.
    prometheus: PrometheusStackOutputs | None = None
    if cfg.monitoring.enabled and cfg.monitoring.mode == "kube-prometheus-stack":
        prometheus = PrometheusStack(
            "monitoring",
            cfg.monitoring,
            grafana_admin_password=(
                cfg.grafana_admin_password.get_secret_value() if cfg.grafana_admin_password else None
            ),
            alerting_secrets={k: v.get_secret_value() for k, v in cfg.alerting_secrets.items()},
            cluster=cluster,
        ).outputs
    monitoring_ready: list[pulumi.Resource] = list(prometheus.crds_ready) if prometheus else []
    karpenter = None
    if cfg.karpenter_pools:
        karpenter = Karpenter(
            "karpenter",
            {name: cfg.gpu_pools[name] for name in cfg.karpenter_pools},
            cluster=cluster,
            environment=cfg.environment,
            region=cfg.aws_region,
            partition=partition,
            account_id=account_id,
            tags=base_tags(cfg, pulumi.get_stack()),
            service_monitor=chart_monitors,
            monitoring_ready=monitoring_ready,
            opts=pulumi.ResourceOptions(providers=[aws_provider]),
        ).outputs
    auto_mode = None
    if cfg.auto_mode_pools:
        auto_mode = AutoModePools(
            "auto-mode",
            {name: cfg.gpu_pools[name] for name in cfg.auto_mode_pools},
            cluster=cluster,
            partition=partition,
            tags=base_tags(cfg, pulumi.get_stack()),
            opts=pulumi.ResourceOptions(providers=[aws_provider]),
        ).outputs
    gpu = GpuPools(
        "gpu",
        cfg.gpu_pools,
        cluster=cluster,
        region=cfg.aws_region,
        partition=partition,
        service_monitor=chart_monitors,
        monitoring_ready=monitoring_ready,
        karpenter_node_role_name=karpenter.node_role_name if karpenter else None,
        auto_mode_node_role_name=auto_mode.node_role_name if auto_mode else None,
        opts=pulumi.ResourceOptions(providers=[aws_provider]),
    ).outputs
    if cfg.installs_cluster_autoscaler:
        NodeAutoscaler(
            # The GPU pools' name: its resources keep the names they had under that component.
            "gpu",
            cfg.node_autoscaling,
            cluster=cluster,
            gpu_pools=gpu,
            region=cfg.aws_region,
            opts=pulumi.ResourceOptions(providers=[aws_provider]),
        )

    store = ModelStore(
        "models",
        cfg.model_store,
        bucket_name=model_bucket_name(cfg, account_id),
        cluster=cluster,
        serving_namespace=cfg.serving.namespace,
        serving_service_account=cfg.serving.name,
        account_id=account_id,
        opts=pulumi.ResourceOptions(providers=[aws_provider]),
    ).outputs
    image_cache = None
    if cfg.serving.image_cache.enabled:
        assert cfg.docker_hub_access_token is not None  # config rule
        image_cache = ImageCache(
            "image-cache",
            cfg.serving.image_cache,
            docker_hub_access_token=cfg.docker_hub_access_token.get_secret_value(),
            stack=pulumi.get_stack(),
            region=cfg.aws_region,
            partition=partition,
            account_id=account_id,
            # Serving pods run on a GPU pool's nodes, or on the system nodes (CPU serving).
            node_role_names={
                **gpu.node_role_names,
                **({"system": cluster.system_node_role_name} if cluster.system_node_role_name else {}),
            },
            opts=pulumi.ResourceOptions(providers=[aws_provider]),
        ).outputs
        extra_outputs["image_cache_node_policy_arn"] = image_cache.node_policy_arn
    serving = TfServing(
        "serving",
        cfg.serving,
        environment=cfg.environment,
        gpu_scheduling=gpu.scheduling,
        gpu_provisioner=cfg.gpu_pools[cfg.serving.gpu_pool].provisioner if cfg.serving.gpu_pool else None,
        gpu_pool=cfg.gpu_pools[cfg.serving.gpu_pool] if cfg.serving.gpu_pool else None,
        store=store,
        region=cfg.aws_region,
        load_balancer_cidrs=(
            cluster.private_subnet_cidrs
            if cfg.ingress and cfg.ingress.scheme == "internal"
            else cluster.public_subnet_cidrs
        ),
        provider=cluster.provider,
        # An autoscaler owns the count: the Deployment then carries no replicas field.
        replicas=None if cfg.autoscaling.enabled else cfg.serving.replicas,
        # Only a stack that monitors admits its Prometheus to the metrics port.
        monitoring_namespace=cfg.monitoring.namespace if cfg.monitoring.enabled else None,
        image_cache=image_cache,
    ).outputs

    ingress: dict[str, Any] = {}
    if cfg.ingress and cfg.ingress.enabled:
        ingress = ingress_outputs(
            Ingress(
                "ingress",
                cfg.ingress,
                api_key=cfg.ingress_api_key.get_secret_value() if cfg.ingress_api_key else None,
                stack=pulumi.get_stack(),
                cluster=cluster,
                serving=serving,
                region=cfg.aws_region,
                partition=partition,
                service_monitor=chart_monitors,
                prometheus=prometheus,
                opts=pulumi.ResourceOptions(providers=[aws_provider]),
            ).outputs
        )
    if cfg.autoscaling.enabled:
        Autoscaling("autoscaling", cfg.autoscaling, serving=serving, cluster=cluster, prometheus=prometheus)
    if cfg.monitoring.logs.enabled:
        logs = ClusterLogs(
            "logs",
            cfg.monitoring.logs,
            cluster=cluster,
            gpu_pools=gpu,
            region=cfg.aws_region,
            opts=pulumi.ResourceOptions(providers=[aws_provider]),
        ).outputs
        extra_outputs["container_log_group"] = logs.log_group_name
    if cfg.monitoring.enabled:
        Monitoring(
            "monitoring",
            cfg.monitoring,
            serving=serving,
            cluster=cluster,
            prometheus=prometheus,
            scales_from_zero=cfg.autoscaling.enabled and cfg.autoscaling.min_replicas == 0,
        )

    served = model_versions(cfg)
    if cfg.serving.promotion_source:
        # What the source stack serves, beside what this one serves, for `tools.promote`.
        source = pulumi.StackReference(cfg.serving.promotion_source)
        extra_outputs["promotion_candidates"] = source.get_output("serving_model_versions").apply(
            lambda theirs: promotion_candidates(theirs or {}, served)
        )

    return {
        **ingress,
        **extra_outputs,
        "serving_model_versions": served,
        "environment": cfg.environment,
        "region": cfg.aws_region,
        "cluster_name": cluster.name,
        "cluster_endpoint": cluster.endpoint,
        "kubernetes_version": cluster.kubernetes_version,
        "oidc_issuer_url": cluster.oidc_issuer_url,
        "oidc_provider_arn": cluster.oidc_provider_arn,
        "vpc_id": cluster.vpc_id,
        "private_subnet_ids": cluster.private_subnet_ids,
        "node_security_group_id": cluster.node_security_group_id,
        "gpu_node_groups": gpu.node_group_names,
        "gpu_scheduling": {
            name: {"node_selector": s.node_selector, "tolerations": s.tolerations}
            for name, s in gpu.scheduling.items()
        },
        "node_cost_usd_per_month": node_cost_estimate(cfg),
        "cold_start_budget": cold_start.budget(cfg),
        "model_bucket": store.bucket_name,
        "model_prefix": store.prefix,
        "model_key_arn": store.key_arn,
        "model_reader_role_arn": store.reader_role_arn,
        "model_publisher_policy_arn": store.publisher_policy_arn,
        "model_publisher_role_arn": store.publisher_role_arn,
        "serving_namespace": serving.namespace,
        "serving_models": serving.model_names,
        "serving_grpc_in_cluster": f"{serving.service_name}.{serving.namespace}.svc:{serving.grpc_port}",
        "serving_rest_in_cluster": f"http://{serving.service_name}.{serving.namespace}.svc:{serving.rest_port}",
        # `pulumi up` does not wait for serving pods (they need a published model): this does.
        "serving_rollout_check": (
            f"kubectl -n {serving.namespace} rollout status deployment/{serving.name} --timeout=30m"
            + (f" && kubectl -n {serving.namespace} rollout status deployment/{serving.canary_service} "
               "--timeout=30m" if serving.canary_service else "")
        ),
        "kubeconfig_command": cluster.name.apply(
            lambda name: f"aws eks update-kubeconfig --name {name} --region {cfg.aws_region}"
        ),
    }


def ingress_outputs(outputs: IngressOutputs) -> dict[str, Any]:
    """The endpoints' stack outputs."""
    return {
        "rest_url": outputs.rest_url,
        "grpc_url": outputs.grpc_url,
        "certificate_arn": outputs.certificate_arn,
        "web_acl_arn": outputs.web_acl_arn,
    }


def node_cost_estimate(cfg: StackConfig) -> dict[str, Any]:
    """Monthly on-demand list price of the node pools: all at min size and all at max size."""
    pools = {
        name: (list(p.instance_types), p.min_size, p.max_size) for name, p in cfg.gpu_pools.items()
    }
    if cfg.cluster.mode == "create":
        system = cfg.cluster.system_node_group
        pools["system"] = (list(system.instance_types), system.min_size, system.max_size)
    low, high = monthly_cost_range(pools)
    priced_in = cfg.aws_region if cfg.aws_region in PRICED_REGIONS else "us-east-1"
    provisioners = {name: p.provisioner for name, p in cfg.gpu_pools.items()}
    return {
        "min": low,
        "max": high,
        # Per pool: what makes its nodes, the types it may launch, one node's month from the
        # cheapest to the dearest of them, and the pool at min and at max size (a Karpenter
        # pool's min is 0: it keeps no standing node; its max is max_size nodes' worth of GPUs).
        "pools": {
            name: {
                **dict(zip(("min", "max"), monthly_cost_range({name: p}))),
                "provisioner": provisioners.get(name, "managed-node-group"),
                "instance_types": p[0],
                "node": dict(zip(("min", "max"), node_cost_range(p[0]))),
            }
            for name, p in pools.items()
        },
        "prices": f"on-demand list prices, {priced_in}; spot pools usually cost less"
        + ("; EKS Auto Mode's per-instance management fee not included" if cfg.auto_mode_pools else ""),
    }


def model_versions(cfg: StackConfig) -> dict[str, Any]:
    """Per model: the versions served (`latest:N` for a latest policy), labels, canary."""
    out: dict[str, Any] = {}
    for name, model in sorted(cfg.serving.models.items()):
        served: Any = (
            sorted(model.versions) if model.version_policy == "specific" else f"latest:{model.latest_count}"
        )
        entry: dict[str, Any] = {"versions": served, "labels": dict(model.labels)}
        if model.canary is not None:
            entry["canary"] = {"version": model.canary.version, "weight": model.canary.weight}
        out[name] = entry
    return out


def promotion_candidates(source: dict[str, Any], here: dict[str, Any]) -> dict[str, Any]:
    """Models whose served versions differ between the source stack and this one."""
    return {
        name: {"source": source[name].get("versions"), "here": here.get(name, {}).get("versions")}
        for name in sorted(source)
        if source[name].get("versions") != here.get(name, {}).get("versions")
    }


def program() -> dict[str, Any]:
    """The Pulumi program: load and validate config, build, export."""
    outputs = build_stack(load_stack_config())
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
