"""The `autoscaling` key: how the serving pods follow load (HPA or KEDA).

Rules here read only the autoscaling section; where its metrics come from and whether its
replicas fit a pool need other keys and live on the root model (components/config/stack.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from components import validation
from components.config.base import RuleError, Section, _by_env, environment_of
from components.validation import checked, worded

MetricKind = Literal[
    "cpu",
    "requests_per_second",
    "latency_p95",
    "latency_p99",
    "batch_queueing_p99",
    "gpu_utilisation",
]
DEFAULT_SCALING_METRICS: dict[MetricKind, float] = {"requests_per_second": 20.0}
CronSchedule = Annotated[str, checked(validation.cron_schedule)]


class ScalingPolicy(Section):
    stabilisation_seconds: int = Field(ge=0, le=3600, description="Look-back window before acting.")
    percent: int = Field(ge=1, le=1000, description="Most replicas to add/remove per period, in %.")
    pods: int = Field(ge=1, le=100, description="Most replicas to add/remove per period.")
    period_seconds: int = Field(15, ge=1, le=1800, description="Length of a period.")


class OffHoursConfig(Section):
    """KEDA cron window: replicas kept up during working hours only (dev GPU cost)."""

    start: CronSchedule = Field("0 8 * * 1-5", description="Cron: when the working window opens.")
    end: CronSchedule = Field("0 19 * * 1-5", description="Cron: when it closes.")
    timezone: Annotated[str, checked(validation.iana_time_zone)] = Field(
        "UTC", description="IANA time zone of start and end (e.g. Europe/Berlin)."
    )
    replicas: int = Field(1, ge=1, le=100, description="Replicas during the window.")

    @model_validator(mode="after")
    def _distinct(self) -> OffHoursConfig:
        # KEDA cron scaler Validate: "start and end can not have exactly same time input".
        if self.start == self.end:
            raise RuleError("end", self.end, "must differ from start (KEDA refuses equal schedules)")
        return self


class AutoscalingConfig(Section):
    """Pods follow load (HPA on custom metrics, or KEDA); GPU nodes follow pods."""

    env_defaults = {
        "min_replicas": _by_env(1, 2),
        "max_replicas": _by_env(2, 8),
        "scale_up": _by_env(
            {"stabilisation_seconds": 0, "percent": 100, "pods": 2, "period_seconds": 30},
            {"stabilisation_seconds": 0, "percent": 100, "pods": 4, "period_seconds": 30},
        ),
        "scale_down": _by_env(
            {"stabilisation_seconds": 120, "percent": 100, "pods": 2, "period_seconds": 60},
            {"stabilisation_seconds": 600, "percent": 25, "pods": 1, "period_seconds": 120},
        ),
    }

    enabled: bool = Field(True, description="Autoscale the serving Deployment.")
    engine: Literal["hpa", "keda"] = Field(
        "hpa", description="HorizontalPodAutoscaler with prometheus-adapter, or KEDA."
    )
    min_replicas: int = Field(ge=0, le=100, description="Fewest replicas (0 only with KEDA).")
    max_replicas: int = Field(ge=1, le=100, description="Most replicas.")
    metrics: dict[MetricKind, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_SCALING_METRICS),
        min_length=1,
        description="Target per pod, by metric: cpu (% of request), requests_per_second, "
        "latency_p95 / latency_p99 / batch_queueing_p99 (ms), gpu_utilisation (%).",
    )
    scale_up: ScalingPolicy = Field(description="How fast replicas are added.")
    scale_down: ScalingPolicy = Field(description="How fast replicas are removed.")
    prometheus_url: Annotated[str, worded(r"https?://\S+", "must be an http:// or https:// URL without spaces")] | None = Field(
        None,
        description="Prometheus for custom metrics. Unset: the stack's kube-prometheus-stack.",
    )
    off_hours: OffHoursConfig | None = Field(
        None, description="KEDA only: keep replicas up in a cron window, scale down outside it."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise RuleError("min_replicas", self.min_replicas, f"must be <= max_replicas ({self.max_replicas})")
        if self.min_replicas == 0 and self.engine != "keda":
            raise RuleError("min_replicas", 0, "scaling to zero needs engine: keda")
        if self.off_hours is not None and self.engine != "keda":
            raise RuleError("off_hours", "...", "off-hours schedules need engine: keda")
        if "cpu" in self.metrics and self.metrics["cpu"] > 100:
            raise RuleError("metrics.cpu", self.metrics["cpu"], "is a percentage of the CPU request (1-100)")
        if "gpu_utilisation" in self.metrics and self.metrics["gpu_utilisation"] > 100:
            raise RuleError(
                "metrics.gpu_utilisation", self.metrics["gpu_utilisation"], "is a percentage (1-100)"
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> AutoscalingConfig:
        if environment_of(info) == "prod" and self.enabled and self.min_replicas < 2:
            raise RuleError(
                "min_replicas",
                self.min_replicas,
                "prod needs at least 2 replicas (no scale to zero)",
            )
        return self
