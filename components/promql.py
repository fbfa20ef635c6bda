"""PromQL that more than one component writes: quantiles of TF Serving's latency histograms,
which the recording rules (monitoring.py) and the autoscalers (autoscaling.py) both compute,
so the two cannot drift apart.

Pure text builders: they must not choose thresholds, windows per use or label values (the
callers do), and must not import a component.
"""

from __future__ import annotations

from collections.abc import Sequence

# TF Serving's latency histograms (/monitoring/prometheus/metrics), in microseconds.
REQUEST_LATENCY_BUCKETS = ":tensorflow:serving:request_latency_bucket"
BATCH_QUEUEING_BUCKETS = ":tensorflow:serving:batching_session:queuing_latency_bucket"
# The window of every per-pod figure: what the autoscalers scale on and what the per-pod
# recording rules show should be the same number.
PER_POD_WINDOW = "2m"


def histogram_quantile_seconds(
    quantile: str, selector: str, by: Sequence[str], window: str, *, grouping_last: bool = False
) -> str:
    """The `0.<quantile>` quantile (`"99"`: p99) of the histogram `selector`, summed by `by`
    over `window`, in seconds (TF Serving records microseconds).

    `grouping_last` writes the grouping after the aggregation, `sum(...) by (...)`, the form
    prometheus-adapter's rule templates are written in; the same query either way."""
    rate = f"rate({selector}[{window}])"
    grouping = ", ".join(by)
    summed = f"sum({rate}) by ({grouping})" if grouping_last else f"sum by ({grouping}) ({rate})"
    return f"histogram_quantile(0.{quantile}, {summed}) / 1e6"
