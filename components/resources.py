"""Resource options of a component's children, written once: parented to the component, with a
provider where one is given, and dependencies or other options on top.

It only builds options; it must not create resources or know about any component.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi


def child_options(
    parent: pulumi.Resource,
    provider: pulumi.ProviderResource | None = None,
    *,
    depends_on: Sequence[pulumi.Resource] = (),
    **options: Any,
) -> pulumi.ResourceOptions:
    """Options of one child of `parent`.

    Without `provider` the child takes its package's provider from the component's
    `providers` (the stack's tagged AWS provider); Kubernetes children name the cluster's
    provider. The child inherits the component's aliases through `parent`. `depends_on` and
    any other `ResourceOptions` field (`aliases`, `ignore_changes`, `custom_timeouts` ...) are
    added as given."""
    return pulumi.ResourceOptions(
        parent=parent, provider=provider, depends_on=list(depends_on) or None, **options
    )
