"""The `node_autoscaling` key: cluster-autoscaler, which adds GPU nodes for pending pods.

Only its own settings; the pools it scales are `gpu_pools` (components/config/gpu_pools.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from components.config.base import Section, _by_env
from components.validation import worded

Duration = Annotated[str, worded(
    r"[1-9][0-9]*(s|m|h)", "must be a whole number of seconds, minutes or hours, e.g. 30s, 10m or 1h"
)]


class NodeAutoscalingConfig(Section):
    """cluster-autoscaler: adds nodes for pending pods, removes idle ones (down to zero)."""

    env_defaults = {
        "scale_down_unneeded_time": _by_env("5m", "15m"),
        "scale_down_delay_after_add": _by_env("5m", "10m"),
    }

    enabled: bool = Field(
        True,
        description="Install cluster-autoscaler for the node groups this stack makes: the system "
        "group and the managed-node-group GPU pools (Karpenter pools have none); in cluster mode "
        "`existing` only those pools (the cluster's own groups are never scaled), and without "
        "them it is not installed.",
    )
    expander: Literal["least-waste", "random", "most-pods", "priority"] = Field(
        "least-waste", description="How to choose among node groups that could take a pod."
    )
    scale_down_unneeded_time: Duration = Field(
        description="How long a node must be idle before it is removed (dev: quickly to zero)."
    )
    scale_down_delay_after_add: Duration = Field(
        description="Pause after a scale-up before scale-down is considered again."
    )
    max_node_provision_time: Duration = Field(
        "15m", description="Give up on a node that has not joined after this long."
    )
