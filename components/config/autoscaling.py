"""The `autoscaling` key: how the serving pods follow load (HPA or KEDA).

Rules here read only the autoscaling section; where its metrics come from and whether its
replicas fit a pool need other keys and live on the root model (components/config/stack.py).
"""

from __future__ import annotations

import math

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from components import validation
from components.config.base import RuleError, Section, _by_env, environment_of
from components.config.monitoring import GPU_UTILISATION_MAX_PERCENT, QUEUEING_HISTOGRAM_TOP_MS
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
# The HPA (and KEDA, which drives one) changes the replica count only when usage / target
# leaves 1 by more than the tolerance (kubernetes pkg/controller/podautoscaler/
# replica_calculator.go; kube-controller-manager --horizontal-pod-autoscaler-tolerance,
# default 0.1, which EKS does not let users change).
HPA_TOLERANCE = 0.1
# The largest value a metric can take, and why: a target within the tolerance of it can
# never trigger a scale-up.
MEASURABLE_MAXIMUM: dict[MetricKind, tuple[float, str]] = {
    "gpu_utilisation": (GPU_UTILISATION_MAX_PERCENT, f"GPU utilisation is at most {GPU_UTILISATION_MAX_PERCENT:.0f}%"),
    "batch_queueing_p99": (
        QUEUEING_HISTOGRAM_TOP_MS, f"TF Serving measures queueing up to about {QUEUEING_HISTOGRAM_TOP_MS:.0f} ms"
    ),
}


def largest_useful_target(kind: MetricKind) -> int:
    """The largest whole target the metric can still exceed by more than the tolerance."""
    most = MEASURABLE_MAXIMUM[kind][0]
    return math.ceil(most / (1 + HPA_TOLERANCE)) - 1
CronSchedule = Annotated[str, checked(validation.cron_schedule)]


class ScalingPolicy(Section):
    stabilisation_seconds: int = Field(ge=0, le=3600, description="Look-back window before acting.")
    percent: int = Field(ge=1, le=1000, description="Most replicas to add/remove per period, in %.")
    pods: int = Field(ge=1, le=100, description="Most replicas to add/remove per period.")
    period_seconds: int = Field(15, ge=1, le=1800, description="Length of a period.")


# A cold start (EC2 launch and boot, a ~6 GB image, the model load) takes minutes; a quarter
# of an hour covers it with room, for a quarter-hour of one GPU node's price a working day.
PREWARM_DEFAULT_MINUTES = 15
PREWARM_MAX_MINUTES = 180


def prewarm_start(start: str, lead_minutes: int) -> str:
    """`start` moved `lead_minutes` earlier on the same days. Only a start at one fixed minute
    and hour can be moved so (a list, range or step would need one schedule per time), and
    only within its day (an earlier day would need a shifted day-of-week field)."""
    minute, hour, *days = start.split()
    if not (minute.isdigit() and hour.isdigit()):
        raise RuleError(
            "prewarm_minutes",
            lead_minutes,
            f"needs start at one fixed minute and hour (e.g. '0 8 * * 1-5'), not {start!r}; "
            "set prewarm_minutes: 0 or give start a single time",
        )
    at = int(hour) * 60 + int(minute) - lead_minutes
    if at < 0:
        raise RuleError(
            "prewarm_minutes",
            lead_minutes,
            f"would move the window's opening ({int(hour):02d}:{int(minute):02d}) to the day "
            "before, on other weekdays than start names; use a shorter lead time or a later start",
        )
    return " ".join([str(at % 60), str(at // 60), *days])


class OffHoursConfig(Section):
    """KEDA cron window: replicas kept up during working hours only (dev GPU cost)."""

    start: CronSchedule = Field("0 8 * * 1-5", description="Cron: when the working window opens.")
    end: CronSchedule = Field("0 19 * * 1-5", description="Cron: when it closes.")
    timezone: Annotated[str, checked(validation.iana_time_zone)] = Field(
        "UTC", description="IANA time zone of start and end (e.g. Europe/Berlin)."
    )
    replicas: int = Field(1, ge=1, le=100, description="Replicas during the window.")
    prewarm_minutes: int = Field(
        PREWARM_DEFAULT_MINUTES,
        ge=0,
        le=PREWARM_MAX_MINUTES,
        description="Bring the window's replicas up this many minutes before start, so the "
        "first user of the day does not wait for a GPU node, the image pull and the model "
        "load (0: at start). Needs start at one fixed minute and hour (e.g. '0 8 * * 1-5') "
        "and a lead that stays on start's day; the default is 0 for any other start.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_prewarm_where_it_applies(cls, data: Any) -> Any:
        # The default lead applies to a start it can move; any other start keeps its own time
        # (a lead time written in the stack file is checked, and refused if it cannot apply).
        if isinstance(data, dict) and "prewarm_minutes" not in data and isinstance(data.get("start"), str):
            try:
                prewarm_start(data["start"], PREWARM_DEFAULT_MINUTES)
            except (RuleError, ValueError):
                data = {**data, "prewarm_minutes": 0}
        return data

    @model_validator(mode="after")
    def _prewarm_stays_on_the_day(self) -> OffHoursConfig:
        if self.prewarm_minutes:
            prewarm_start(self.start, self.prewarm_minutes)  # raises RuleError with the reason
        return self

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
        "latency_p95 / latency_p99 / batch_queueing_p99 (ms), gpu_utilisation (%). A target the "
        f"metric can never exceed by the autoscaler's {HPA_TOLERANCE:.0%} tolerance is refused "
        f"(gpu_utilisation above {largest_useful_target('gpu_utilisation')}, batch_queueing_p99 "
        f"above {largest_useful_target('batch_queueing_p99')}).",
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
        for kind, (most, why) in MEASURABLE_MAXIMUM.items():
            target = self.metrics.get(kind)
            if target is not None and target * (1 + HPA_TOLERANCE) >= most:
                raise RuleError(
                    f"metrics.{kind}",
                    target,
                    f"can never scale up: the autoscaler adds pods only above the target plus "
                    f"{HPA_TOLERANCE:.0%} and {why}; use at most {largest_useful_target(kind)}",
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
