"""Tags and labels, layered once: every AWS resource and every Kubernetes object gets them.

It computes names and labels only; it must not create resources.
"""

from __future__ import annotations

from collections.abc import Mapping

from components.config import PROJECT, StackConfig


def base_tags(cfg: StackConfig, stack: str) -> dict[str, str]:
    """Default tags of the AWS provider, so every AWS resource carries them."""
    return {
        "project": PROJECT,
        "stack": stack,
        "environment": cfg.environment,
        "managed-by": "pulumi",
        **cfg.tags,
    }


def k8s_labels(component: str, name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `app.kubernetes.io/*` labels every Kubernetes object of ours carries."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PROJECT,
        "app.kubernetes.io/managed-by": "pulumi",
        **(extra or {}),
    }
