"""The `monitoring` key: Prometheus, alert thresholds and receivers, container logs.

Rules here read only the monitoring section; receivers' secrets and the GPU memory alert
against the serving fraction need other keys and live on the root model
(components/config/stack.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from components.config.base import (
    LabelValue,
    LogRetentionDays,
    Name,
    QualifiedName,
    RuleError,
    Section,
    _by_env,
    created_namespace_problem,
    environment_of,
    section,
)
from components.validation import worded

RetentionPeriod = Annotated[str, worded(r"[1-9][0-9]*(h|d|w|y)", "must be a whole number of hours, days, weeks or years, e.g. 15d")]
Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")
# The most the exporters can report, which no alert threshold or scaling target may need to
# exceed. TF Serving's queueing histogram ends at 100 us * 1.2^51 = 1094 ms
# (tensorflow/serving batching/batching_session.cc: Buckets::Exponential(100, 1.2, 52),
# "~1 second"), and histogram_quantile never reads above the highest finite bound;
# DCGM_FI_DEV_GPU_UTIL is a percentage.
QUEUEING_HISTOGRAM_TOP_MS = 1094.0
GPU_UTILISATION_MAX_PERCENT = 100.0


class AlertThresholds(Section):
    """Where the alert rules fire."""

    error_ratio: float = Field(
        0.05, gt=0, lt=1, description="Share of requests failing server-side (5 min) that alerts."
    )
    latency_p99_ms: int = Field(
        500, ge=1, le=600_000, description="p99 request latency SLO per model, in milliseconds."
    )
    # Below QUEUEING_HISTOGRAM_TOP_MS: a higher threshold could never be crossed.
    queueing_p99_ms: int = Field(
        50, ge=1, le=1000, description="p99 batching queueing latency that alerts (ms); TF Serving measures up to about 1 s."
    )
    # The alerts compare with `>`: DCGM_FI_DEV_GPU_UTIL is at most 100 (%) and used / (used +
    # free) at most 1, so a threshold of 100 could never be passed.
    gpu_utilisation_percent: int = Field(
        90, ge=1, le=99, description="Average GPU utilisation over 15 min that counts as saturated."
    )
    gpu_memory_percent: int = Field(
        95, ge=1, le=99, description="GPU framebuffer use that counts as nearly full."
    )
    restarts_per_hour: int = Field(
        3, ge=1, le=1000, description="Container restarts in an hour that alert."
    )


class AlertReceiverConfig(Section):
    """Where alerts go; the URL or key is `alerting_secrets.<receiver name>` (a secret)."""

    type: Literal["slack", "webhook", "pagerduty"] = Field(
        description="slack (incoming webhook URL), webhook (generic URL) or pagerduty (routing key)."
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list(SEVERITIES),
        min_length=1,
        description="Alert severities routed here.",
    )
    slack_channel: Annotated[str, worded(r"#[a-z0-9_-]{1,80}", "must be a Slack channel: # and 1 to 80 lower-case letters, digits, '_' or '-'")] | None = Field(
        None, description="Slack channel (type slack)."
    )

    @model_validator(mode="after")
    def _slack_has_a_channel(self) -> AlertReceiverConfig:
        if self.type == "slack" and self.slack_channel is None:
            raise RuleError("slack_channel", None, "slack needs a channel")
        return self


class LogsConfig(Section):
    """Container logs to CloudWatch Logs through Fluent Bit."""

    env_defaults = {"enabled": _by_env(False, True), "retention_days": _by_env(7, 90)}

    enabled: bool = Field(description="Ship every container's logs to CloudWatch Logs.")
    retention_days: LogRetentionDays = Field(description="Retention of the container log group.")


class MonitoringConfig(Section):
    env_defaults = {
        "retention": _by_env("3d", "15d"),
        "storage_gib": _by_env(20, 100),
        "replicas": _by_env(1, 2),
    }

    enabled: bool = Field(True, description="Metrics, alerts and dashboards for the stack.")
    mode: Literal["kube-prometheus-stack", "existing-operator"] = Field(
        "kube-prometheus-stack",
        description="Install kube-prometheus-stack, or only create our ServiceMonitors, rules and "
        "dashboard for a Prometheus Operator already in the cluster.",
    )
    namespace: Name = Field("monitoring", description="Namespace Prometheus runs in.")
    retention: RetentionPeriod = Field(description="How long Prometheus keeps metrics.")
    storage_gib: int = Field(ge=5, le=16_000, description="Prometheus volume (gp3) per replica.")
    replicas: int = Field(ge=1, le=5, description="Prometheus and Alertmanager replicas.")
    rule_labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        description="Extra labels on our ServiceMonitors and rules, for an existing Prometheus's "
        "selectors (mode existing-operator).",
    )
    thresholds: AlertThresholds = section("Alert thresholds.")
    logs: LogsConfig = section("Container logs (Fluent Bit to CloudWatch Logs).")
    runbook_base_url: Annotated[str, worded(r"\S+#[a-z0-9-]+", "must be a URL or path without spaces ending in #<anchor> (lower-case letters, digits, '-')")] = Field(
        "README.md#runbook",
        description="Alerts link to `<this>-<alert name in lower case>`: point it at your copy "
        "of the README's runbook.",
    )
    receivers: dict[Name, AlertReceiverConfig] = Field(
        default_factory=dict, description="Alertmanager receivers keyed by name."
    )

    @property
    def installs_prometheus(self) -> bool:
        """Whether the stack installs kube-prometheus-stack (and creates `namespace`)."""
        return self.enabled and self.mode == "kube-prometheus-stack"

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> MonitoringConfig:
        if environment_of(info) == "prod" and self.enabled and not self.receivers:
            raise RuleError(
                "receivers",
                {},
                "prod needs at least one alert receiver (slack, webhook or pagerduty)",
            )
        return self

    @model_validator(mode="after")
    def _namespace_is_ours_to_create(self) -> MonitoringConfig:
        # An existing operator's namespace is its owner's: the stack does not create it.
        if self.installs_prometheus:
            problem = created_namespace_problem("namespace", self.namespace)
            if problem:
                raise problem
        return self
