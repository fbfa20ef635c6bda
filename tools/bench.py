"""Benchmark: whole-process wall time and peak memory of the offline preview and the model sync.

    python -m tools.bench [preview|sync|cold-start]      (make bench: all three)

Runs the preview as a separate process for dev, prod, and dev-shaped stacks serving 1, 10
and 50 models, so the cost of growth is visible; and the model sync script
(components/scripts/model-sync.sh, with the AWS CLI from requirements-dev.txt) against
moto's S3 server for 50 models x 3 versions: the first pass (everything new) and a second
one (nothing new, the sidecar's cost every interval); and the modelled cold start of the dev and
prod stacks' pools with each feature on and off (components/cold_start.py). Prints figures;
asserts nothing.
It creates nothing outside a temporary folder and its own in-process moto server.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tools.lib.stackfile import parse_document, stack_file

MODEL_COUNTS = (1, 10, 50)
SYNC_MODELS, SYNC_VERSIONS = 50, 3


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


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int]:
    """(seconds, peak RSS in MiB, CPU seconds, exit status) of one process and its children.

    wait4's rusage is RUSAGE_CHILDREN's for that one child: ru_maxrss is the largest RSS of
    the child or any descendant it waited for (getrusage(2)), here one `aws` process.
    """
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def bench_model_sync(models: int = SYNC_MODELS, versions: int = SYNC_VERSIONS) -> None:
    """The sync script's --once pass over `models` x `versions` small published versions."""
    import boto3
    from moto.server import ThreadedMotoServer

    from components.model_sync import SYNC_SH
    from tools.lib.model_repository import publish

    aws = Path(sys.executable).parent / "aws"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket="bench-models")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            source = root / "export"
            for rel, size in (("saved_model.pb", 20_000), ("variables/variables.index", 500),
                              ("variables/variables.data-00000-of-00001", 100_000), ("assets/vocab.txt", 2_000)):
                (source / rel).parent.mkdir(parents=True, exist_ok=True)
                (source / rel).write_bytes(os.urandom(size))
            names = [f"model-{i:03d}" for i in range(models)]
            for name in names:
                for version in range(1, versions + 1):
                    publish(s3, "bench-models", "models", name, version, source)
            (root / "models").mkdir()
            (root / "home").mkdir()
            (root / "sync.sh").write_text(SYNC_SH)
            (root / "models.txt").write_text("".join(f"{n} latest {versions}\n" for n in names))
            env = {
                "PATH": f"{aws.parent}:/usr/bin:/bin", "HOME": str(root / "home"),
                "MODEL_BUCKET": "bench-models", "MODEL_PREFIX": "models", "MODEL_ROOT": str(root / "models"),
                "MODELS_FILE": str(root / "models.txt"), "AWS_ENDPOINT_URL": endpoint,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_PAGER": "",
                "AWS_CONFIG_FILE": str(root / "home" / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(root / "home" / "none"),
                "AWS_EC2_METADATA_DISABLED": "true", **keys,
            }
            print(f"\nmodel sync, {models} models x {versions} versions against moto's S3 server")
            print(f"{'pass':<12} {'wall s':>8} {'peak MiB':>9} {'cpu s':>7}  status")
            for label in ("first", "steady"):
                seconds, peak, cpu, status = run_child(["bash", str(root / "sync.sh"), "--once"], env)
                print(f"{label:<12} {seconds:>8.2f} {peak:>9.1f} {cpu:>7.2f}  {'ok' if status == 0 else f'exit {status}'}")
            print(f"peak RSS of any child so far (getrusage RUSAGE_CHILDREN): "
                  f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f} MiB")
    finally:
        server.stop()


def bench_preview() -> None:
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


def bench_cold_start() -> None:
    from tools.cold_start_docs import tables

    print("modelled cold start, zero GPU nodes to the first prediction (components/cold_start.py):")
    print(tables())


def main(argv: list[str] | None = None) -> int:
    choices = {"preview", "sync", "cold-start"}
    which = set(argv if argv is not None else sys.argv[1:]) or choices
    if not which <= choices:
        print("usage: python -m tools.bench [preview|sync|cold-start]", file=sys.stderr)
        return 2
    if "cold-start" in which:
        bench_cold_start()
    if "preview" in which:
        bench_preview()
    if "sync" in which:
        bench_model_sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
