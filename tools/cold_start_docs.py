"""The README's cold-start budget tables: the modelled time from zero GPU nodes to the first
prediction for the repository's dev and prod stacks, stage by stage, with each feature turned
the other way, and the figures the model uses with their sources (components/cold_start.py,
catalog.COLD_START).

    python -m tools.cold_start_docs                  # print them
    python -m tools.cold_start_docs --write-readme   # refresh README.md between the markers

It must not change anything but the README's text between its markers, nor model anything
itself (components/cold_start.py does).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from components import cold_start
from components.catalog import COLD_START
from components.config.gpu_pools import GP3_BASE_THROUGHPUT_MIBPS
from tools.lib.readme_section import write_between
from tools.lib.stackfile import load_stack_file

BEGIN = "<!-- cold-start-budget:begin -->"
END = "<!-- cold-start-budget:end -->"
STACKS = ("dev", "prod")


def tables() -> str:
    head = "| stack | pool | " + " | ".join(cold_start.STAGES) + " | total | dominant | each feature turned the other way |"
    rows = [head, "|" + "---|" * (len(cold_start.STAGES) + 5)]
    for stack in STACKS:
        budget = cold_start.budget(load_stack_file(stack))
        for pool, each in sorted(budget["pools"].items()):
            stages = " | ".join(f"{each['stages_seconds'][s]:.0f} s" for s in cold_start.STAGES)
            toggled = "; ".join(f"{k}: {v / 60:.1f} min" for k, v in each["with"].items()) or "none"
            mark = " (serving)" if pool == budget["serving_pool"] else ""
            rows.append(
                f"| {stack} | {pool}{mark} | {stages} | {each['total_seconds'] / 60:.1f} min | "
                f"{each['dominant_stage']} | {toggled} |"
            )
    # The dev serving pool as each provisioner would start it: Karpenter decides on its batch
    # window; Auto Mode nodes take no user data, so no parallel pull (GpuPoolConfig).
    cfg = load_stack_file("dev")
    pool = cfg.serving.gpu_pool
    if pool is not None:
        f = cold_start.features_of(cfg, pool)
        unpinned = cfg.gpu_pools[pool].image_pull.volume_throughput_mibps is None
        by_provisioner = {
            "managed-node-group": replace(f, provisioner="managed-node-group"),
            "karpenter": replace(f, provisioner="karpenter", warm_pool=None),
            "auto-mode": replace(
                f, provisioner="auto-mode", warm_pool=None, parallel_pull=False, prepulled_snapshot=False,
                volume_mibps=GP3_BASE_THROUGHPUT_MIBPS if unpinned else f.volume_mibps,
            ),
        }
        rows += ["", f"The dev serving pool `{pool}` by provisioner:", "",
                 "| provisioner | " + " | ".join(cold_start.STAGES) + " | total |",
                 "|" + "---|" * (len(cold_start.STAGES) + 2)]
        for name, g in by_provisioner.items():
            modelled = cold_start.estimate(g)
            cells = " | ".join(f"{modelled[s]:.0f} s" for s in cold_start.STAGES)
            rows.append(f"| {name} | {cells} | {sum(modelled.values()) / 60:.1f} min |")
    figures = ["", "| figure | value | source |", "|---|---|---|"]
    figures += [f"| `{name}` | {f.value:g} {f.unit} | {f.source} |" for name, f in COLD_START.items()]
    return "\n".join(rows + figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write-readme", action="store_true", help="refresh README.md between the markers")
    args = parser.parse_args(argv)
    if args.write_readme:
        write_between(Path("README.md"), BEGIN, END, tables())
    else:
        print(tables())
    return 0


if __name__ == "__main__":
    sys.exit(main())
