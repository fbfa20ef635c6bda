"""Kubernetes objects built as data beside the serving workload: custom resources (Gateway
API, load balancer, Prometheus Operator, KEDA) and built-in kinds whose spec we build as a
dict (the HPA), named after the workload and placed in its namespace.

It only gives such objects their metadata; it must not build specs, choose labels or
dependencies (each component owns those), nor create anything on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.serving import ServingOutputs


def serving_custom_resource(
    resource_name: str,
    serving: ServingOutputs,
    api_version: str,
    kind: str,
    spec: Any,
    *,
    labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
    name: str | None = None,
    cluster_scoped: bool = False,
) -> k8s.apiextensions.CustomResource:
    """`kind` named `name` (default: the serving workload's name), in the serving namespace
    unless `cluster_scoped`.

    A plain CustomResource goes through the same engine path as the typed classes; its spec
    stays data, which the tests check against the kind's schema."""
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=api_version,
        kind=kind,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=serving.name if name is None else name,
            namespace=None if cluster_scoped else serving.namespace,
            labels=dict(labels),
        ),
        spec=spec,
        opts=opts,
    )
