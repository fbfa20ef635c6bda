"""Benchmark: whole-process wall time and peak memory of the offline preview.

    python -m tools.bench            (make bench)

Runs the preview as a separate process for dev, prod, and dev-shaped stacks serving 1, 10
and 50 models, so the cost of growth is visible. Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tools.lib.stackfile import parse_document, stack_file

MODEL_COUNTS = (1, 10, 50)


def generated_stack(models: int) -> dict[str, object]:
    """The dev stack file with `models` models."""
    path = stack_file("dev")
    document = parse_document(path.read_text(), path.name, "dev") or {}
    serving = document["config"]["tf-serving-eks:serving"]
    serving["models"] = {f"model-{i:03d}": {"version_policy": "latest"} for i in range(models)}
    return document


def run_preview(stack: str, path: Path, out: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit status) of one preview process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.preview", "--stack", stack, "--stack-file", str(path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> int:
    cases: list[tuple[str, Path]] = [("dev", stack_file("dev")), ("prod", stack_file("prod"))]
    with tempfile.TemporaryDirectory() as tmp:
        for count in MODEL_COUNTS:
            path = Path(tmp) / f"Pulumi.models-{count}.yaml"
            path.write_text(yaml.safe_dump(generated_stack(count), sort_keys=False))
            cases.append((f"models-{count}", path))
        print(f"{'stack':<12} {'wall s':>8} {'peak MiB':>9}  status")
        for stack, path in cases:
            seconds, peak, status = run_preview(stack, path, Path(tmp) / "out" / stack)
            print(f"{stack:<12} {seconds:>8.2f} {peak:>9.1f}  {'ok' if status == 0 else f'exit {status}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
