"""The node-local model cache, run for real: several serving pods' sync scripts (real bash
processes, the real AWS CLI against moto's S3 server) sharing one cache directory, as the
pods of one node share it (components/model_cache.py). Calls to S3 are recorded by a
wrapper around the CLI, so "no download" is counted, not assumed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.external_tools import missing, program
from tests.test_model_sync import (  # noqa: F401  (fixtures)
    PREFIX,
    S3Store,
    arm_cut_download,
    assert_version_is,
    local_versions,
    s3_endpoint,
    sync_env,
)

pytestmark = pytest.mark.long_running

# Every AWS CLI call a pod makes, one line each: "<pod> <arguments>". With AWS_SLOW_COPY set,
# a recursive copy waits that long first, so a second pod surely arrives mid-fill.
RECORDING_AWS = """#!/bin/bash
echo "$POD_NAME $*" >> "$AWS_CALLS"
if [[ " $* " == *" --recursive "* ]] && [ -n "${AWS_SLOW_COPY:-}" ]; then sleep "$AWS_SLOW_COPY"; fi
exec "$RECORDING_REAL_AWS" "$@"
"""


@dataclass
class Node:
    """One node: its cache directory, and the environment of each pod's sync containers."""

    store: S3Store
    base_env: dict[str, str]
    tmp: Path
    cache: Path
    calls: Path

    def pod(self, name: str, **extra: str) -> dict[str, str]:
        root = self.tmp / "pods" / name / "models"
        root.mkdir(parents=True, exist_ok=True)
        return {
            **self.base_env,
            "POD_NAME": name,
            "MODEL_ROOT": str(root),
            "MODELS_FILE": str(self.tmp / "pods" / name / "models.txt"),
            "MODEL_CACHE": str(self.cache),
            "MODEL_CACHE_MAX_KIB": str(10 * 1024 * 1024),
            **extra,
        }

    def downloads(self, pod: str | None = None) -> list[str]:
        """The `aws s3 cp` calls (manifests and versions), by one pod or all."""
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [line for line in lines if " s3 cp " in f" {line} " and (pod is None or line.split()[0] == pod)]

    def cached(self, model: str) -> list[str]:
        folder = self.cache / model
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


@pytest.fixture
def node(sync_env: tuple[S3Store, Path, dict[str, str]], tmp_path: Path) -> Iterator[Node]:
    store, _, env = sync_env
    wrapped = tmp_path / "recording-bin"
    wrapped.mkdir()
    (wrapped / "aws").write_text(RECORDING_AWS)
    (wrapped / "aws").chmod(0o755)
    real = shutil.which("aws", path=env["PATH"])
    assert real
    cache = tmp_path / "node-cache"
    cache.mkdir()
    calls = tmp_path / "aws-calls"
    env = {**env, "PATH": f"{wrapped}:{env['PATH']}", "RECORDING_REAL_AWS": real, "AWS_CALLS": str(calls)}
    yield Node(store, env, tmp_path, cache, calls)


def start(env: dict[str, str], models: str, *args: str) -> subprocess.Popen[str]:
    Path(env["MODELS_FILE"]).write_text(models)
    return subprocess.Popen(
        ["bash", env["SCRIPT"], *(args or ("--once",))], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def run(env: dict[str, str], models: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = start(env, models, *args)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def pod_root(env: dict[str, str]) -> Path:
    return Path(env["MODEL_ROOT"])


def assert_cache_clean(cache: Path) -> None:
    """Nothing half-made is left: no staging, no lock."""
    staging = cache / ".staging"
    # .staging/<model>/ stays (made once per model); anything inside it is a filler's work.
    leftovers = [p for p in staging.rglob("*") if p.is_file() or p.parent != staging] if staging.exists() else []
    assert leftovers == [], f"staging left behind: {leftovers}"
    locks = [p for p in (cache / ".locks").rglob("*") if p.is_dir() and p.parent != cache / ".locks"] \
        if (cache / ".locks").exists() else []
    assert not [p for p in locks if p.name != ".evict"], f"locks left behind: {locks}"


V1 = {"saved_model.pb": b"graph 1", "variables/variables.index": b"idx 1",
      "variables/variables.data-00000-of-00001": b"w" * 4096}
V2 = {"saved_model.pb": b"graph 2", "variables/variables.index": b"idx 2",
      "variables/variables.data-00000-of-00001": b"v" * 4096}


def test_two_pods_racing_on_one_node_download_each_version_once(node: Node) -> None:
    """A stable pod and a canary pod of the same node start together: each version crosses
    from S3 once, both pods get every byte, and the cache holds only whole versions."""
    node.store.put_version("resnet", 1, V1)
    node.store.put_version("resnet", 2, V2)
    stable = node.pod("tf-serving-abc12-xyz34", AWS_SLOW_COPY="2")
    canary = node.pod("tf-serving-canary-def56-uvw78", AWS_SLOW_COPY="2")
    procs = [start(stable, "resnet specific 1\n"), start(canary, "resnet specific 1,2\n")]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err
    assert_version_is(pod_root(stable), "resnet", 1, V1)
    assert_version_is(pod_root(canary), "resnet", 1, V1)
    assert_version_is(pod_root(canary), "resnet", 2, V2)
    copies = [line for line in node.downloads() if "--recursive" in line]
    assert sorted(line.split()[-2].rstrip("/").rsplit("/", 1)[-1] for line in copies) == ["1", "2"], (
        f"each version is downloaded once per node: {copies}"
    )
    assert node.cached("resnet") == ["1", "2"]
    assert_version_is(node.cache, "resnet", 1, V1)
    assert_cache_clean(node.cache)
    # Each pod leases what it serves, so eviction leaves it.
    assert (node.cache / ".pins" / "resnet" / "1" / stable["POD_NAME"]).is_file()
    assert (node.cache / ".pins" / "resnet" / "2" / canary["POD_NAME"]).is_file()


def test_a_pod_starts_from_the_cache_without_downloading(node: Node) -> None:
    node.store.put_version("resnet", 1, V1)
    first = node.pod("first")
    assert run(first, "resnet latest 1\n").returncode == 0
    assert node.downloads("first"), "the first pod on the node fills the cache from S3"
    later = node.pod("later")
    result = run(later, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert node.downloads("later") == [], "a version in the cache is not downloaded again"
    assert_version_is(pod_root(later), "resnet", 1, V1)
    assert "model-sync: model resnet: version 1 is live (from the node cache)" in result.stderr
    # The sidecar's next passes do not download it either.
    assert run(later, "resnet latest 1\n").returncode == 0
    assert node.downloads("later") == []


def test_a_fill_killed_mid_download_is_never_visible_and_the_next_pod_recovers(node: Node) -> None:
    node.store.put_version("resnet", 1, V1)
    killed = node.pod("killed", LOCK_STALE_SECONDS="2")
    armed = arm_cut_download(killed, node.tmp, "hang")
    proc = start(killed, "resnet latest 1\n")
    try:
        deadline = time.monotonic() + 60
        while not Path(killed["FAULT_HUNG"]).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the fault never hung the copy"
            time.sleep(0.05)
        assert not armed.exists()
        partial = [p.name for p in (node.cache / ".staging").rglob("*") if p.is_file()]
        assert "saved_model.pb" in partial, "the copy was cut mid-way, inside the cache's staging"
        assert node.cached("resnet") == [], "no pod can see the half-filled version"
        assert local_versions(pod_root(killed), "resnet") == []
    finally:
        os.killpg(proc.pid, 9)  # the pod's processes, heartbeat and all
        proc.wait(timeout=10)
    assert node.cached("resnet") == []
    # The next pod finds the dead pod's lock, waits until it is stale, takes it over and fills.
    other = node.pod("other", LOCK_STALE_SECONDS="2")
    result = run(other, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert "of killed " in result.stderr and "taking it over" in result.stderr, result.stderr
    assert_version_is(node.cache, "resnet", 1, V1)
    assert_version_is(pod_root(other), "resnet", 1, V1)
    assert_cache_clean(node.cache)  # the dead pod's staging is swept by the pass's upkeep
    # The killed pod, restarted (its init container runs again), now takes it from the cache.
    killed.pop("FAULT_ARMED")
    result = run(killed, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert "(from the node cache)" in result.stderr
    assert_version_is(pod_root(killed), "resnet", 1, V1)


def unshare_works() -> str:
    unshare = program("unshare")
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        missing(f"needs unprivileged user and mount namespaces for a size-limited tmpfs: {probe.stderr.strip()}")
    return unshare


# A size-limited tmpfs mounted on the cache directory in a user and mount namespace of the
# pod's script alone: a real filesystem that really fills (ENOSPC), without root.
# What the cache holds afterwards is listed from inside, before the tmpfs goes with it.
ON_SMALL_DISK = """
mount -t tmpfs -o size="$CACHE_DISK" tmpfs "$MODEL_CACHE" || exit 99
bash "$SCRIPT" --once; rc=$?
(cd "$MODEL_CACHE" && find . -type f | sort) > "$CACHE_LISTING"
exit $rc
"""

# Another writer fills the cache's disk just before the version's copy starts (after the
# cache checked there was room): the copy then fails with ENOSPC mid-way.
FILLING_AWS = """#!/bin/bash
if [[ " $* " == *" --recursive "* ]]; then
  dd if=/dev/zero of="$MODEL_CACHE/other-writer" bs=4096 2>/dev/null || true
fi
exec "$FILLING_REAL_AWS" "$@"
"""


@pytest.mark.parametrize("how", ["known too big", "fills while copying"])
def test_a_full_cache_disk_never_leaves_a_partial_version_and_the_pod_still_gets_it(
    node: Node, how: str
) -> None:
    unshare = unshare_works()
    big = {**V1, "variables/variables.data-00000-of-00001": os.urandom(600 * 1024)}
    node.store.put_version("resnet", 1, big)
    listing = node.tmp / "cache-listing"
    pod = node.pod("pod", CACHE_DISK="512k" if how == "known too big" else "2m", CACHE_LISTING=str(listing))
    if how == "fills while copying":
        wrapped = node.tmp / "filling-bin"
        wrapped.mkdir()
        (wrapped / "aws").write_text(FILLING_AWS)
        (wrapped / "aws").chmod(0o755)
        pod.update(FILLING_REAL_AWS=str(shutil.which("aws", path=pod["PATH"])), PATH=f"{wrapped}:{pod['PATH']}")
    Path(pod["MODELS_FILE"]).write_text("resnet latest 1\n")
    result = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "bash", "-c", ON_SMALL_DISK],
                            env=pod, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    expected = ("does not fit in the node cache" if how == "known too big"
                else "the node cache's disk filled while version 1 was copied in")
    assert "model-sync: model resnet: version 1" in result.stderr and expected in result.stderr, result.stderr
    assert "it comes straight from S3" in result.stderr
    assert_version_is(pod_root(pod), "resnet", 1, big)
    files = listing.read_text().split()
    partial = [f for f in files if f.startswith(("./resnet/", "./.staging/"))]
    assert partial == [], f"the full disk left part of a version in the cache: {partial}"
    if how == "fills while copying":
        assert "./other-writer" in files, "the disk really was filled"


def version(payload_kib: int, tag: bytes) -> dict[str, bytes]:
    return {"saved_model.pb": tag, "variables/variables.index": tag,
            "variables/variables.data-00000-of-00001": tag * (payload_kib * 1024 // len(tag))}


def test_eviction_keeps_leased_versions_and_evicts_the_least_recently_used(node: Node) -> None:
    for v in (1, 2, 3):
        node.store.put_version("m", v, version(200, f"v{v}".encode()))
    # Room for two versions (224 KiB each by the script's estimate, plus the cache's own
    # folders and leases: about 520 KiB in all on ext4), not three.
    bound = {"MODEL_CACHE_MAX_KIB": "650", "PIN_STALE_SECONDS": "600"}
    a, b = node.pod("a", **bound), node.pod("b", **bound)
    assert run(a, "m specific 1\n").returncode == 0
    result = run(b, "m specific 2\n")
    assert result.returncode == 0, result.stderr
    assert node.cached("m") == ["1", "2"], result.stderr
    # b moves to version 3 while still serving 2: both cached versions are leased.
    result = run(b, "m specific 3\n")
    assert result.returncode == 0, result.stderr
    assert "version 3 (" in result.stderr and "does not fit in the node cache" in result.stderr
    assert local_versions(pod_root(b), "m") == ["3"], "the pod got it straight from S3"
    assert node.cached("m") == ["1", "2"], "a leased version is never evicted"
    # 2 is leased by nobody now (b retired it); 1 is still a's.
    c = node.pod("c", **bound)
    result = run(c, "m specific 3\n")
    assert result.returncode == 0, result.stderr
    assert "node cache: model m version 2 evicted (least recently used, leased by no pod" in result.stderr
    assert node.cached("m") == ["1", "3"]
    # a is gone: its lease was not refreshed for longer than PIN_STALE_SECONDS, and 1 was used
    # before 3. Another pod asking for 2 evicts 1, not 3 (leased by c).
    old = time.time() - 3600
    os.utime(node.cache / ".pins" / "m" / "1" / "a", (old, old))
    os.utime(node.cache / ".used" / "m" / "1", (old, old))
    d = node.pod("d", **bound)
    result = run(d, "m specific 2\n")
    assert result.returncode == 0, result.stderr
    assert "node cache: model m version 1 evicted" in result.stderr
    assert node.cached("m") == ["2", "3"]
    assert not (node.cache / ".pins" / "m" / "1").exists() or not any((node.cache / ".pins" / "m" / "1").iterdir())
    assert_cache_clean(node.cache)


def test_a_damaged_cached_version_is_dropped_and_the_pod_downloads_it(node: Node) -> None:
    node.store.put_version("resnet", 1, V1)
    assert run(node.pod("first"), "resnet latest 1\n").returncode == 0
    (node.cache / "resnet" / "1" / "variables" / "variables.index").write_bytes(b"bit rot")
    second = node.pod("second")
    result = run(second, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert "model-sync: model resnet: the node cache's version 1 does not match its manifest" in result.stderr
    assert_version_is(pod_root(second), "resnet", 1, V1)
    assert node.cached("resnet") == []
    assert node.downloads("second"), "the pod downloaded it itself"


def test_without_a_cache_directory_mounted_the_pod_downloads_as_before(node: Node) -> None:
    """A cache path that cannot be written (the volume missing, read-only): the cache is an
    optimisation, never the reason a pod lacks its model."""
    node.store.put_version("resnet", 1, V1)
    pod = node.pod("pod", MODEL_CACHE=str(node.tmp / "no-such-file" / "cache"))
    (node.tmp / "no-such-file").write_text("a file, so nothing can be made under it")
    result = run(pod, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert "the node cache" in result.stderr and "is not writable" in result.stderr, result.stderr
    assert_version_is(pod_root(pod), "resnet", 1, V1)
