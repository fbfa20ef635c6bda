"""The node-local model cache (components/model_cache.py).

- Its protocol, run for real: several serving pods' sync scripts (real bash processes, the
  real AWS CLI against moto's S3 server) sharing one cache directory, as the pods of one node
  share it. Calls to S3 are recorded by a wrapper around the CLI, so "no download" is
  counted, not assumed.
- What the stack renders for it, read as the software that consumes it reads it: Pod
  Security admission's volume checks, the PV controller's binding rules, the scheduler's
  node affinity and taints, nodeadm's NodeConfig; and the config rules' errors.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components import model_cache
from components.config import StackConfigError
from tests.support import chart_renders as cr
from tests.support import parse, raw_stack, render_raw
from tests.support.external_tools import missing, program
from tests.support.scheduling import can_land, node_selector_holds
from tests.test_cold_start import JOINING_CONFIG, launch_template, node_configs, schema_errors
from tests.test_model_sync import (  # noqa: F401  (fixtures)
    PREFIX,
    S3Store,
    arm_cut_download,
    assert_version_is,
    local_versions,
    s3_endpoint,
    sync_env,
)
from tools.lib.mock_engine import Rendering

Manifest = dict[str, Any]

long_running = pytest.mark.long_running

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


@long_running
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


@long_running
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


@long_running
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


@long_running
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


@long_running
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


@long_running
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


@long_running
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


# --- what the stack renders -------------------------------------------------------------


# Pod Security admission's volume checks (kubernetes staging/src/k8s.io/pod-security-admission/
# policy/check_restrictedVolumes.go: restricted admits only these volume sources; and
# check_hostPathVolumes.go: baseline already refuses hostPath).
RESTRICTED_VOLUME_SOURCES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


def psa_refusals(pod_spec: Manifest, level: str) -> list[str]:
    """Volumes a namespace at `level` refuses, by name (privileged: none)."""
    refused = []
    for volume in pod_spec.get("volumes", []):
        sources = set(volume) - {"name"}
        if level == "restricted" and not sources <= RESTRICTED_VOLUME_SOURCES:
            refused.append(volume["name"])
        if level == "baseline" and "hostPath" in sources:
            refused.append(volume["name"])
    return refused


def cache_variant(**serving: object) -> Rendering:
    """dev, with a canary pod too, so stable and canary pods share the node cache."""
    raw = raw_stack("dev")
    raw["serving"]["models"]["resnet"] = {"version_policy": "specific", "versions": [3], "canary": {"version": 4, "weight": 10}}
    raw["serving"].update(serving)
    return render_raw(raw, stack="dev-canary-cache")


def objects(r: Rendering, kind: str) -> list[Manifest]:
    return [m for m in r.k8s_objects() if m["kind"] == kind]


def serving_deployments(r: Rendering) -> list[Manifest]:
    return [d for d in objects(r, "Deployment") if d["metadata"]["namespace"] == "tf-serving"]


def test_the_serving_pods_stay_restricted_and_only_the_folder_maker_needs_privileged() -> None:
    r = cache_variant()
    namespaces = {m["metadata"]["name"]: m["metadata"]["labels"] for m in objects(r, "Namespace")}
    [cache_ds] = objects(r, "DaemonSet")
    for deployment in serving_deployments(r):
        level = namespaces[deployment["metadata"]["namespace"]]["pod-security.kubernetes.io/enforce"]
        assert level == "restricted"
        assert psa_refusals(deployment["spec"]["template"]["spec"], level) == [], deployment["metadata"]["name"]
    # The checker can fail: the folder-maker's hostPath is refused below privileged...
    folder_maker = cache_ds["spec"]["template"]["spec"]
    assert psa_refusals(folder_maker, "restricted") == psa_refusals(folder_maker, "baseline") == ["cache"]
    # ... and its namespace, which holds only it and a deny-all policy, is privileged.
    ns = cache_ds["metadata"]["namespace"]
    assert namespaces[ns]["pod-security.kubernetes.io/enforce"] == "privileged"
    in_ns = sorted(m["kind"] for m in r.k8s_objects() if m["metadata"].get("namespace") == ns)
    assert in_ns == ["DaemonSet", "NetworkPolicy"]
    [policy] = [m for m in objects(r, "NetworkPolicy") if m["metadata"]["namespace"] == ns]
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "no rule: nothing in or out"
    # It mounts the folder read-only, as a non-root container without capabilities.
    [c] = folder_maker["containers"]
    assert c["volumeMounts"] == [{"name": "cache", "mountPath": model_cache.CACHE_MOUNT, "readOnly": True}]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert folder_maker["automountServiceAccountToken"] is False


def binds(pv: Manifest, pvc: Manifest) -> list[str]:
    """Why the PV controller would not bind the claim to the volume (kubernetes
    pkg/controller/volume/persistentvolume: pv_controller.go syncUnboundClaim binds a claim
    with volumeName to that volume when checkVolumeSatisfyClaim holds: capacity, storage
    class, access modes (util.go CheckAccessModes), volume mode; and the volume's claimRef, if
    set, names this claim)."""
    why = []
    spec, want = pv["spec"], pvc["spec"]
    if want.get("volumeName") != pv["metadata"]["name"]:
        why.append("the claim names another volume")
    ref = spec.get("claimRef") or {}
    if ref and (ref.get("namespace"), ref.get("name")) != (pvc["metadata"]["namespace"], pvc["metadata"]["name"]):
        why.append("the volume is reserved for another claim")
    # Both are written in Gi by the stack.
    if int(str(spec["capacity"]["storage"]).removesuffix("Gi")) < int(
        str(want["resources"]["requests"]["storage"]).removesuffix("Gi")
    ):
        why.append("too small")
    if (spec.get("storageClassName") or "") != (want.get("storageClassName") or ""):
        why.append("storage classes differ")
    if not set(want["accessModes"]) <= set(spec["accessModes"]):
        why.append("access modes")
    if spec.get("volumeMode", "Filesystem") != want.get("volumeMode", "Filesystem"):
        why.append("volume modes differ")
    return why


def test_stable_and_canary_pods_mount_one_claim_that_binds_to_the_node_folder() -> None:
    r = cache_variant()
    [pv] = objects(r, "PersistentVolume")
    [pvc] = objects(r, "PersistentVolumeClaim")
    assert binds(pv, pvc) == []
    # The check can fail.
    assert binds(pv, {**pvc, "spec": {**pvc["spec"], "storageClassName": "gp3"}}) == ["storage classes differ"]
    # An unset class would be given the default StorageClass (and a provisioned EBS volume).
    assert pvc["spec"]["storageClassName"] == ""
    assert pv["spec"]["local"] == {"path": "/mnt/k8s-disks/0/tf-serving-model-cache"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    deployments = serving_deployments(r)
    assert sorted(d["metadata"]["name"] for d in deployments) == ["tf-serving", "tf-serving-canary"]
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [pvc["metadata"]["name"]], d["metadata"]["name"]
        # TF Serving reads only its own copies: the cache is the sync containers' alone.
        [server] = spec["containers"]
        assert model_cache.VOLUME_NAME not in {m["name"] for m in server["volumeMounts"]}
        # The kubelet gives a local volume the pod's fsGroup (local.go SetUpAt ->
        # SetVolumeOwnership): the sync containers write it through that group.
        assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
        for sync in spec["initContainers"]:
            assert sync["securityContext"]["runAsGroup"] == spec["securityContext"]["fsGroup"]
            mounts = {m["name"]: m["mountPath"] for m in sync["volumeMounts"]}
            env = {e["name"]: e for e in sync["env"]}
            assert env["MODEL_CACHE"]["value"] == mounts[model_cache.VOLUME_NAME]
            assert env["MODEL_CACHE_MAX_KIB"]["value"] == str(100 * 1024 * 1024)  # dev's size_gib
            assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
            # Leases outlive a few missed passes, not a pod.
            interval = int(env["SYNC_INTERVAL_SECONDS"]["value"])
            assert 2 * interval < int(env["PIN_STALE_SECONDS"]["value"]) <= 10 * interval


def test_the_cache_folder_exists_on_every_node_the_pods_can_land_on() -> None:
    r = cache_variant()
    [pv] = objects(r, "PersistentVolume")
    [ds] = objects(r, "DaemonSet")
    folder_maker = ds["spec"]["template"]["spec"]
    assert folder_maker["volumes"][0]["hostPath"] == {"path": pv["spec"]["local"]["path"], "type": "DirectoryOrCreate"}
    nodes = cr.node_groups(r)
    landing = [n for n in nodes if any(can_land(d["spec"]["template"]["spec"], n) for d in serving_deployments(r))]
    assert landing, "the serving pods land somewhere"
    for node in landing:
        # The scheduler's VolumeBinding filter: a bound local volume's node affinity.
        assert node_selector_holds(pv["spec"]["nodeAffinity"]["required"], node.labels), node.name
        assert can_land(folder_maker, node), f"no folder-maker on {node.name}: the pods would wait for the folder"
    system = [n for n in nodes if not n.gpu]
    assert system and not any(node_selector_holds(pv["spec"]["nodeAffinity"]["required"], n.labels) for n in system)


def test_the_folder_is_on_the_raid0_array_nodeadm_makes_else_on_the_root_volume() -> None:
    r = cache_variant()
    ours = node_configs(base64.b64decode(launch_template(r, "l4")["userData"]).decode())
    assert all(schema_errors(c) == [] for c in ours)
    storage = [c["spec"]["instance"]["localStorage"] for c in [*ours, JOINING_CONFIG] if "instance" in c["spec"]]
    # No mountPath: nodeadm's default, /mnt/k8s-disks, with the array at /mnt/k8s-disks/0
    # (setup-local-disks: MNT_DIR and maybe_raid's array_mount_point).
    assert storage == [{"strategy": "RAID0"}]
    [pv] = objects(r, "PersistentVolume")
    assert pv["spec"]["local"]["path"].startswith("/mnt/k8s-disks/0/")
    # Without the instance store the folder is on the root volume.
    raw = raw_stack("dev")
    raw["gpu_pools"]["l4"].update(instance_store="none", disk_size_gib=200)
    plain = render_raw(raw, stack="dev-root-volume-cache")
    [pv] = objects(plain, "PersistentVolume")
    assert pv["spec"]["local"]["path"] == "/var/lib/tf-serving-model-cache"
    plain_configs = node_configs(base64.b64decode(launch_template(plain, "l4")["userData"]).decode())
    assert all("instance" not in c["spec"] for c in plain_configs)


def test_a_karpenter_pool_gets_its_instance_store_from_the_node_class() -> None:
    raw = raw_stack("dev")
    pool = raw["gpu_pools"]["l4"]
    for key in ("min_size", "desired_size", "max_unavailable"):
        pool.pop(key, None)
    pool["provisioner"] = "karpenter"
    r = render_raw(raw, stack="dev-karpenter-cache")
    [node_class] = objects(r, "EC2NodeClass")
    assert node_class["spec"]["instanceStorePolicy"] == "RAID0"
    ours = node_configs(node_class["spec"]["userData"])
    assert all("instance" not in c["spec"] for c in ours), "Karpenter's own NodeConfig says it"


def test_without_the_cache_nothing_of_it_is_rendered() -> None:
    from tests.conftest import rendered_stack

    prod = rendered_stack("prod")
    assert not objects(prod, "PersistentVolume") and not objects(prod, "DaemonSet")
    for d in serving_deployments(prod):
        for sync in d["spec"]["template"]["spec"]["initContainers"]:
            assert "MODEL_CACHE" not in {e["name"] for e in sync["env"]}


def with_changes(*changes: tuple[str, object]) -> Manifest:
    raw = raw_stack("dev")
    for dotted, value in changes:
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


BAD = [
    ("declared versions outgrow the cache",
     [("serving.models.resnet.disk_gib", 30), ("serving.models.half-plus-two.disk_gib", 10)],
     ["tf-serving-eks:serving.model_cache.size_gib", "(got 100)", "take 110 GiB", "resnet 30 GiB x 3",
      "half-plus-two 10 GiB x 2", "at least 110"]),
    ("the root volume cannot hold it",
     [("gpu_pools.l4.instance_store", "none"), ("serving.model_cache.size_gib", 80)],
     ["tf-serving-eks:serving.model_cache.size_gib", "(got 80)", "needs 120 GiB", "gpu_pools.l4.disk_size_gib (100 GiB)",
      "raise disk_size_gib"]),
    ("the instance store cannot hold it",
     [("serving.model_cache.size_gib", 300)],
     ["tf-serving-eks:serving.model_cache.size_gib", "(got 300)", "instance store of pool 'l4' (233 GiB"]),
    ("pods' own copies count on the same disk",
     [("serving.model_cache.size_gib", 150), ("serving.models.resnet.disk_gib", 20)],
     ["tf-serving-eks:serving.model_cache.size_gib", "120 GiB for the model copies of 2 pod(s)"]),
    ("CPU serving",
     [("serving.gpu_pool", None), ("serving.gpu_memory_fraction", None)],
     ["tf-serving-eks:serving.model_cache.enabled", "set serving.gpu_pool"]),
    ("a Bottlerocket pool",
     [("gpu_pools.l4.ami_type", "BOTTLEROCKET_x86_64_NVIDIA"), ("gpu_pools.l4.time_slicing_replicas", None),
      ("gpu_pools.l4.instance_store", "none"), ("serving.gpu_memory_fraction", 0.9)],
     ["tf-serving-eks:serving.model_cache.enabled", "runs Bottlerocket"]),
    ("raid0 on Bottlerocket",
     [("gpu_pools.l4.ami_type", "BOTTLEROCKET_x86_64_NVIDIA"), ("gpu_pools.l4.time_slicing_replicas", None),
      ("serving.model_cache", None), ("serving.gpu_memory_fraction", 0.9)],
     ["tf-serving-eks:gpu_pools.l4.instance_store", '(got "raid0")', "AL2023"]),
]


@pytest.mark.parametrize("changes, fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_cache_the_nodes_cannot_hold_is_refused_with_the_rule(
    changes: list[tuple[str, object]], fragments: list[str]
) -> None:
    with pytest.raises(StackConfigError) as info:
        parse(with_changes(*changes), stack="dev")
    message = str(info.value)
    assert message.startswith("stack 'dev': invalid configuration")
    assert message.count("\n  - ") == 1, f"one error: {message}"
    for fragment in fragments:
        assert fragment in message, message


def test_declared_versions_that_fit_are_accepted() -> None:
    cfg = parse(with_changes(("serving.models.resnet.disk_gib", 10), ("serving.models.half-plus-two.disk_gib", 1)), "dev")
    assert cfg.serving.model_cache.size_gib == 100
