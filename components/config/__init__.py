"""The stack configuration: one pydantic model, validated once, before any resource exists.

Every key lives under the project namespace in `Pulumi.<stack>.yaml`
(`tf-serving-eks:<key>`), except the region, which is the AWS provider's own
`aws:region`. Defaults depend on `environment`: a key left out of a dev stack gets
the small, cheap value; left out of a prod stack, the highly available one.

Each top-level key has its model and rules in the module named after it (`cluster`,
`gpu_pools`, `serving`, ...); `stack` holds the root model and the rules that need two
keys; `errors` and `loading` turn settings into a model or one readable error. This
package only re-exports, so `from components.config import X` is the one spelling for
every caller; it must define nothing, and importing it must need no running Pulumi engine
(the commands and tools/config_docs.py use the model offline).
"""

from components.config.autoscaling import (
    DEFAULT_SCALING_METRICS,
    AutoscalingConfig,
    CronSchedule,
    MetricKind,
    OffHoursConfig,
    ScalingPolicy,
)
from components.config.base import (
    ENVIRONMENTS,
    PROJECT,
    Environment,
    IamPrincipalArn,
    LabelValue,
    LogRetentionDays,
    Name,
    NodeGroupSizing,
    QualifiedName,
    RuleError,
    Section,
    SwitchedOffIsAbsent,
    TagKey,
    Tags,
    TagValue,
    section,
)
from components.config.cluster import (
    ALL_LOG_TYPES,
    EKS_PUBLIC_ACCESS_CIDRS_MAX,
    AddonsConfig,
    AddonVersion,
    ClusterConfig,
    ClusterName,
    EndpointConfig,
    ExistingClusterConfig,
    LogType,
    SubnetId,
    SystemNodeGroupConfig,
    VpcConfig,
)
from components.config.errors import StackConfigError, format_errors
from components.config.gpu_pools import (
    AUTO_MODE,
    AutoModePoolConfig,
    KARPENTER,
    MANAGED_NODE_GROUP,
    DisruptionBudget,
    GpuPoolConfig,
    KarpenterPoolConfig,
    karpenter_controller_replicas,
    PoolName,
    TaintConfig,
    describe_shape,
    node_shape,
    pool_zone_problems,
    strict_zone_spread,
    zone_share,
)
from components.config.ingress import (
    ALB_RULES_PER_LOAD_BALANCER,
    AccessConfig,
    AcmCertificateArn,
    DnsName,
    HeaderName,
    HostedZoneId,
    IngressConfig,
    alb_listener_rules,
)
from components.config.loading import (
    PROVIDER_NAMESPACES,
    check_pool_zones,
    config_from_pulumi_settings,
    load_stack_config,
    parse_pulumi_settings,
    parse_stack_config,
    secret_settings,
    settings_problems,
)
from components.config.model_store import BucketName, ModelStoreConfig, S3Prefix
from components.config.monitoring import (
    SEVERITIES,
    AlertReceiverConfig,
    AlertThresholds,
    LogsConfig,
    MonitoringConfig,
    RetentionPeriod,
    Severity,
)
from components.config.node_autoscaling import Duration, NodeAutoscalingConfig
from components.config.serving import (
    CANARY_LABEL,
    SERVING_NAME_MAX,
    BatchingConfig,
    CanaryConfig,
    CpuQuantity,
    ImageCacheConfig,
    MemoryQuantity,
    ModelCacheConfig,
    ModelConfig,
    ServiceName,
    ServingConfig,
    cache_need_gib,
    cpu_milli,
    memory_mib,
    pod_copy_gib,
)
from components.config.stack import (
    GPU_CONTEXT_HEADROOM_PERCENT,
    AwsRegion,
    StackConfig,
)

__all__ = [
    # base
    "ENVIRONMENTS",
    "PROJECT",
    "Environment",
    "IamPrincipalArn",
    "LabelValue",
    "LogRetentionDays",
    "Name",
    "NodeGroupSizing",
    "QualifiedName",
    "RuleError",
    "Section",
    "SwitchedOffIsAbsent",
    "TagKey",
    "TagValue",
    "Tags",
    "section",
    # cluster
    "ALL_LOG_TYPES",
    "EKS_PUBLIC_ACCESS_CIDRS_MAX",
    "AddonVersion",
    "AddonsConfig",
    "ClusterConfig",
    "ClusterName",
    "EndpointConfig",
    "ExistingClusterConfig",
    "LogType",
    "SubnetId",
    "SystemNodeGroupConfig",
    "VpcConfig",
    # gpu_pools
    "GpuPoolConfig",
    "AUTO_MODE",
    "AutoModePoolConfig",
    "KARPENTER",
    "MANAGED_NODE_GROUP",
    "DisruptionBudget",
    "KarpenterPoolConfig",
    "karpenter_controller_replicas",
    "PoolName",
    "TaintConfig",
    "describe_shape",
    "node_shape",
    "pool_zone_problems",
    "strict_zone_spread",
    "zone_share",
    # node_autoscaling
    "Duration",
    "NodeAutoscalingConfig",
    # model_store
    "BucketName",
    "ModelStoreConfig",
    "S3Prefix",
    # serving
    "CANARY_LABEL",
    "SERVING_NAME_MAX",
    "BatchingConfig",
    "CanaryConfig",
    "CpuQuantity",
    "ImageCacheConfig",
    "MemoryQuantity",
    "ModelCacheConfig",
    "ModelConfig",
    "ServiceName",
    "ServingConfig",
    "cache_need_gib",
    "cpu_milli",
    "memory_mib",
    "pod_copy_gib",
    # ingress
    "ALB_RULES_PER_LOAD_BALANCER",
    "AccessConfig",
    "AcmCertificateArn",
    "DnsName",
    "HeaderName",
    "HostedZoneId",
    "IngressConfig",
    "alb_listener_rules",
    # monitoring
    "SEVERITIES",
    "AlertReceiverConfig",
    "AlertThresholds",
    "LogsConfig",
    "MonitoringConfig",
    "RetentionPeriod",
    "Severity",
    # autoscaling
    "DEFAULT_SCALING_METRICS",
    "AutoscalingConfig",
    "CronSchedule",
    "MetricKind",
    "OffHoursConfig",
    "ScalingPolicy",
    # stack
    "GPU_CONTEXT_HEADROOM_PERCENT",
    "AwsRegion",
    "StackConfig",
    # errors
    "StackConfigError",
    "format_errors",
    # loading
    "PROVIDER_NAMESPACES",
    "check_pool_zones",
    "config_from_pulumi_settings",
    "load_stack_config",
    "parse_pulumi_settings",
    "parse_stack_config",
    "secret_settings",
    "settings_problems",
]
