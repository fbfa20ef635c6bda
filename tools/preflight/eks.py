"""Preflight checks of what EKS offers in the stack's region: the stack's Kubernetes version
(offered, and its standard / extended support window) and, in mode create, every add-on
build the program pins for that version. It reads EKS only (DescribeClusterVersions,
DescribeAddonVersions, and DescribeCluster through tools.preflight.existing in mode
existing); it must not create or change anything, nor check what the stack refers to
(tools/preflight/existing.py does)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from components import catalog
from components.cluster import ADDONS_AFTER_NODES, ADDONS_BEFORE_NODES
from tools.preflight.aws_errors import CouldNotCheck, guarded
from tools.preflight.existing import existing_cluster
from tools.preflight.model import Context, Finding

# Warn this long before standard support ends: time to plan and test an upgrade.
STANDARD_SUPPORT_WARN_DAYS = 90


def checks(ctx: Context) -> list[Finding]:
    if not ctx.online:
        return []
    try:
        version = stack_version(ctx)
    except CouldNotCheck as exc:
        return [exc.finding]
    if version is None:
        return []  # mode existing without a cluster: tools/preflight/existing.py reports it
    findings = [version_finding(ctx, version)]
    if ctx.config.cluster.mode == "create":
        # Mode existing installs no EKS add-on: the cluster's are its owner's.
        findings += addon_findings(ctx, version)
    return findings


def stack_version(ctx: Context) -> str | None:
    """The Kubernetes version the stack runs: config in mode create, the cluster's own in mode
    existing (components/cluster.py _existing_version takes it from the cluster)."""
    cfg = ctx.config.cluster
    if cfg.mode == "create":
        return cfg.kubernetes_version
    found = existing_cluster(ctx)
    return str(found["version"]) if found else None


def _day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else "?"


def version_finding(ctx: Context, version: str, now: datetime | None = None) -> Finding:
    check = f"EKS Kubernetes version {version}"
    needs = f"Kubernetes {version} offered in {ctx.region}"
    eks = ctx.client("eks")  # type: ignore[misc]
    try:
        # includeAll: an UNSUPPORTED version is still listed, so it is told apart from an
        # unknown one (EKS API reference, DescribeClusterVersions).
        found = _paged(ctx, check, needs, "eks:DescribeClusterVersions", eks, "describe_cluster_versions",
                       "clusterVersions", clusterVersions=[version], includeAll=True)
    except CouldNotCheck as exc:
        return exc.finding
    info = next((v for v in found if v.get("clusterVersion") == version), None)
    key = "cluster.kubernetes_version" if ctx.config.cluster.mode == "create" else f"cluster.name ({ctx.config.cluster.name})"
    if info is None or info.get("versionStatus") == "UNSUPPORTED":
        try:
            offered = [
                v["clusterVersion"] for v in _paged(ctx, check, needs, "eks:DescribeClusterVersions", eks,
                                                     "describe_cluster_versions", "clusterVersions")
                if v.get("versionStatus") != "UNSUPPORTED"
            ]
        except CouldNotCheck:
            offered = []
        usable = [v for v in _pinned_versions() if v in offered]
        has = "not offered" if info is None else f"unsupported since {_day(info.get('endOfExtendedSupportDate'))}"
        has += f"; offered here: {', '.join(offered) or 'none listed'}"
        fix = (
            f"set {key} to {' or '.join(usable)} (offered here and pinned in components/catalog.py)"
            if usable and ctx.config.cluster.mode == "create"
            else f"use a version offered in {ctx.region} that components/catalog.py pins ({', '.join(_pinned_versions())})"
        )
        return Finding(check, needs, has, "fail", fix)
    standard_end = info.get("endOfStandardSupportDate")
    extended_end = info.get("endOfExtendedSupportDate")
    window = f"standard support until {_day(standard_end)}, extended support until {_day(extended_end)}"
    now = now or datetime.now(timezone.utc)
    newer = [v for v in _pinned_versions() if _minor(v) > _minor(version)]
    upgrade = (
        f"upgrade: set {key} to {newer[-1]}" if newer and ctx.config.cluster.mode == "create"
        else "upgrade the cluster to a newer version (EKS user guide, \"Update existing cluster to new Kubernetes version\")"
    )
    if info.get("versionStatus") == "EXTENDED_SUPPORT":
        # EKS pricing: a cluster on a version in extended support is billed the extended
        # per-cluster-hour price (USD 0.60 instead of 0.10), see cluster.support_type.
        return Finding(
            check, needs,
            f"in extended support (standard support ended {_day(standard_end)}; extended support ends "
            f"{_day(extended_end)}): billed at the extended-support price",
            "warn", upgrade,
        )
    if isinstance(standard_end, datetime) and (standard_end - now).days < STANDARD_SUPPORT_WARN_DAYS:
        then = (
            "EKS then upgrades the control plane (cluster.support_type STANDARD)"
            if ctx.config.cluster.support_type == "STANDARD"
            else "the cluster then moves to extended support, billed at the extended price (cluster.support_type EXTENDED)"
        )
        return Finding(
            check, needs,
            f"standard support ends {_day(standard_end)}, in {(standard_end - now).days} days; {then}",
            "warn", upgrade,
        )
    return Finding(check, needs, window, "pass")


def _pinned_versions() -> list[str]:
    return sorted(catalog.ADDON_VERSIONS, key=_minor)


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _paged(ctx: Context, check: str, needs: str, action: str, client: Any, operation: str, key: str,
           **params: Any) -> list[dict[str, Any]]:
    def pages() -> list[dict[str, Any]]:
        return [item for page in client.get_paginator(operation).paginate(**params) for item in page.get(key, [])]

    return guarded(check, needs, action, pages) or []


def addon_findings(ctx: Context, version: str) -> list[Finding]:
    """One finding per add-on components/cluster.py installs, in its install order."""
    addons = (*ADDONS_BEFORE_NODES, *ADDONS_AFTER_NODES)
    # One call per add-on, in parallel: boto3 clients are thread-safe (boto3 docs, "Multithreading").
    eks = ctx.client("eks")  # type: ignore[misc]
    with ThreadPoolExecutor(max_workers=len(addons)) as pool:
        return list(pool.map(lambda a: addon_finding(ctx, eks, a, version), addons))


def _build_key(build: str) -> tuple[int, ...]:
    # v1.22.4-eksbuild.3: newest first means by upstream version, then EKS build number.
    return _minor(build)


def addon_finding(ctx: Context, eks: Any, addon: catalog.AddonName, version: str) -> Finding:
    pin = ctx.config.cluster.addon_version(addon)
    check = f"EKS add-on {addon} build"
    needs = f"{pin} for Kubernetes {version}"
    try:
        found = _paged(ctx, check, needs, "eks:DescribeAddonVersions", eks, "describe_addon_versions", "addons",
                       addonName=addon, kubernetesVersion=version)
    except CouldNotCheck as exc:
        return exc.finding
    builds: dict[str, bool] = {}
    for entry in found:
        if entry.get("addonName") != addon:
            continue
        for build in entry.get("addonVersions", []):
            for compat in build.get("compatibilities", []):
                if compat.get("clusterVersion") == version:
                    builds[build["addonVersion"]] = builds.get(build["addonVersion"], False) or bool(
                        compat.get("defaultVersion")
                    )
    if pin in builds:
        return Finding(check, needs, f"{pin} offered" + (" (the default)" if builds[pin] else ""), "pass")
    listed = [f"{b} (default)" if builds[b] else b for b in sorted(builds, key=_build_key, reverse=True)]
    has = f"{pin} not offered for {version} in {ctx.region}; builds for {version}: {', '.join(listed) or 'none'}"
    config_key = f"cluster.addons.{addon.replace('-', '_')}"
    suggestion = next((b for b in builds if builds[b]), None) or (max(builds, key=_build_key) if builds else None)
    if suggestion is None:
        fix = f"{addon} has no build for Kubernetes {version} here: choose another cluster.kubernetes_version"
    elif getattr(ctx.config.cluster.addons, addon.replace("-", "_")):
        fix = f"set {config_key}: {suggestion} in Pulumi.{ctx.stack}.yaml"
    else:
        fix = (
            f"set {config_key}: {suggestion} in Pulumi.{ctx.stack}.yaml, or move the pin "
            f"ADDON_VERSIONS[\"{version}\"][\"{addon}\"] in components/catalog.py"
        )
    return Finding(check, needs, has, "fail", fix)
