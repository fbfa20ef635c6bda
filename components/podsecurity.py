"""The container security every workload container of ours gets (Pod Security `restricted`)."""

from __future__ import annotations

import pulumi_kubernetes as k8s


def restricted_container(uid: int) -> k8s.core.v1.SecurityContextArgs:
    """Non-root, read-only root filesystem, no capabilities, no escalation, default seccomp."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )
