"""Offline preview: run the real program for a stack under the mock engine and write what it
would deploy, with no cloud account, no Pulumi CLI and no network.

    python -m tools.preview --stack dev --out build/dev

Writes `<out>/k8s/<component>/<kind>-<name>.yaml` for every Kubernetes object,
`<out>/inventory.yaml` for every resource (type, logical name, key settings) and
`<out>/outputs.yaml`, then prints a summary table. Exits 2 with the config error for an
invalid stack file.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from components.cold_start import warnings as cold_start_warnings
from components.config import StackConfigError
from tools.lib.mock_engine import Registered, Rendering, render
from tools.lib.stackfile import read_settings, stack_file

# Inputs worth showing in the inventory, per resource type (the rest stay in the YAML).
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "aws:eks/cluster:Cluster": ("name", "version", "enabledClusterLogTypes", "accessConfig", "deletionProtection"),
    "aws:eks/nodeGroup:NodeGroup": ("instanceTypes", "capacityType", "amiType", "scalingConfig", "labels", "taints"),
    "aws:eks/addon:Addon": ("addonName", "addonVersion", "configurationValues"),
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("availabilityZone", "cidrBlock", "tags"),
    "aws:ec2/natGateway:NatGateway": ("subnetId",),
    "aws:kms/key:Key": ("enableKeyRotation", "deletionWindowInDays"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "aws:eks/accessEntry:AccessEntry": ("principalArn", "type"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    "kubernetes:helm.sh/v3:Release": ("chart", "version", "namespace", "repositoryOpts"),
    "kubernetes:yaml/v2:ConfigFile": ("file",),
    "aws:acm/certificate:Certificate": ("domainName", "subjectAlternativeNames", "validationMethod"),
    "aws:route53/record:Record": ("zoneId", "name", "type"),
    "aws:wafv2/webAcl:WebAcl": ("scope", "defaultAction"),
    "aws:wafv2/ipSet:IpSet": ("addresses",),
    "pulumi:providers:aws": ("region", "defaultTags"),
}


def inventory_entry(resource: Registered) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": resource.type,
        "name": resource.name,
        "component": resource.component,
    }
    settings = {k: resource.inputs[k] for k in KEY_SETTINGS.get(resource.type, ()) if k in resource.inputs}
    if resource.is_k8s_object:
        meta = resource.inputs.get("metadata", {})
        settings = {"kind": resource.inputs.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}
    if settings:
        entry["settings"] = settings
    for flag in ("protect", "retain_on_delete"):
        if getattr(resource, flag):
            entry[flag] = True
    if resource.ignore_changes:
        entry["ignore_changes"] = resource.ignore_changes
    return entry


def write_rendering(rendering: Rendering, out: Path) -> list[Path]:
    """Write manifests, inventory and outputs under `out` (replacing what was there)."""
    if out.exists():
        shutil.rmtree(out)
    written: list[Path] = []
    for resource in rendering.resources:
        if not resource.is_k8s_object:
            continue
        manifest = resource.manifest()
        kind = str(manifest.get("kind", resource.type.split(":")[-1])).lower()
        path = out / "k8s" / resource.component / f"{kind}-{resource.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    for resource in rendering.of_type("kubernetes:helm.sh/v3:Release"):
        path = out / "helm" / resource.component / f"{resource.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        release = {k: resource.inputs.get(k) for k in ("chart", "version", "namespace", "repositoryOpts")}
        path.write_text(yaml.safe_dump({**release, "values": resource.inputs.get("values", {})}, sort_keys=False))
        written.append(path)
    out.mkdir(parents=True, exist_ok=True)
    inventory = [
        inventory_entry(r)
        for r in rendering.resources
        if r.custom or r.type.startswith(("pulumi:providers", "kubernetes:yaml/"))
    ]
    (out / "inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (out / "outputs.yaml").write_text(yaml.safe_dump(rendering.outputs, sort_keys=True))
    return written


def summary_table(rendering: Rendering) -> str:
    counts = Counter(
        (r.component, r.type)
        for r in rendering.resources
        if r.custom or r.type.startswith("kubernetes:yaml/")
    )
    rows = [("component", "type", "count")]
    rows += [(c, t, str(n)) for (c, t), n in sorted(counts.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = sum(counts.values())
    k8s = sum(1 for r in rendering.resources if r.is_k8s_object)
    lines.append(f"\n{total} resources, {k8s} Kubernetes objects, stack '{rendering.stack}'")
    cost = rendering.outputs.get("node_cost_usd_per_month")
    if cost:
        lines.append(
            f"node pools: ${cost['min']:,.2f} to ${cost['max']:,.2f} per month "
            f"(all at min size .. all at max size; {cost['prices']})"
        )
        for pool, each in sorted(cost["pools"].items()):
            node = each.get("node") or {}
            lines.append(
                f"  {pool} ({each.get('provisioner', 'managed-node-group')}; "
                f"{', '.join(each.get('instance_types') or [])}): ${each['min']:,.2f} .. ${each['max']:,.2f}"
                + (f"; one node ${node['min']:,.2f}" + (f" .. ${node['max']:,.2f}" if node["max"] != node["min"] else "")
                   if node else "")
            )
    budget = rendering.outputs.get("cold_start_budget")
    if budget and budget.get("pools"):
        lines.append("cold start from zero nodes to the first prediction (modelled; README, Cold start budget):")
        for pool, each in sorted(budget["pools"].items()):
            stages = ", ".join(f"{k} {v:.0f}s" for k, v in each["stages_seconds"].items())
            mark = " (serving)" if pool == budget.get("serving_pool") else ""
            lines.append(f"  {pool}{mark}: {each['total_seconds'] / 60:.1f} min = {stages}")
            if each["with"]:
                lines.append(
                    "    with " + "; ".join(f"{k}: {v / 60:.1f} min" for k, v in each["with"].items())
                )
        lines += cold_start_warnings(budget)
    return "\n".join(lines)


def preview(stack: str, out: Path, path: Path | None = None) -> Rendering:
    settings, secret_keys = read_settings(path or stack_file(stack))
    rendering = render(stack, settings, secret_keys)
    write_rendering(rendering, out)
    return rendering


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="output folder (default build/<stack>)")
    parser.add_argument("--stack-file", type=Path, help="read this file instead of Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    path = args.stack_file or stack_file(args.stack)
    if not path.exists():
        print(f"error: no stack file {path.name}", file=sys.stderr)
        return 2
    out = args.out or Path("build") / args.stack
    try:
        rendering = preview(args.stack, out, path)
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(rendering))
    print(f"wrote {out}/inventory.yaml, {out}/outputs.yaml, {out}/k8s/ and {out}/helm/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
