"""Model sync: the init container and sidecar in the pods, and their script run for real
(the real AWS CLI against moto's S3 server, with faults injected)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from components.model_layout import marker_key, version_prefix
from components.model_store import reader_policy
from components.model_sync import SYNC_IMAGE, READY_SH, SYNC_SH, ModelSync, models_file
from tests.support.external_tools import program
from tools.lib.mock_engine import Rendering

pytestmark = pytest.mark.long_running


def test_sync_containers_are_pinned_non_root_and_credential_free(dev: Rendering) -> None:
    deployment = next(m for m in dev.k8s_objects() if m["kind"] == "Deployment")
    for c in deployment["spec"]["template"]["spec"]["initContainers"]:
        assert c["image"] == SYNC_IMAGE and not c["image"].endswith(":latest")
        names = {e["name"] for e in c["env"]}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        assert c["securityContext"]["runAsUser"] != 0


def test_models_file_lines() -> None:
    text = models_file({"b": ModelSync("specific", versions=(2, 5)), "a": ModelSync("latest", latest_count=3)})
    assert text == "a latest 3\nb specific 2,5\n"


# --- the sync script, run for real: the real AWS CLI against moto's S3 server ---------------
# The pods run AWS CLI v2 (SYNC_IMAGE); the tests run CLI v1 from PyPI (requirements-dev.txt).
# Both are botocore-based and take the same commands, flags, endpoint and credential
# variables; the image's shell is Amazon Linux 2's bash 4.2 (aws/aws-cli docker/Dockerfile),
# so the script must not rely on bash >= 4.4 behaviour (`inherit_errexit`), and the tests run
# it in a plain `bash` with no such option.

BUCKET = "models-bucket"
PREFIX = "models"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str, **credentials: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials.get("key", "testing"),
        aws_secret_access_key=credentials.get("secret", "testing"),
    )


class S3Store:
    """Publishes versions as the publisher does: files first, the manifest last."""

    def __init__(self, endpoint: str, bucket: str = BUCKET, prefix: str = PREFIX) -> None:
        self.s3, self.bucket, self.prefix = s3_client(endpoint), bucket, prefix

    def create(self) -> None:
        self.s3.create_bucket(Bucket=self.bucket)

    def put_version(self, model: str, version: int, files: dict[str, bytes], complete: bool = True) -> None:
        lines = []
        for rel, data in sorted(files.items()):
            self.s3.put_object(Bucket=self.bucket, Key=version_prefix(self.prefix, model, version) + rel, Body=data)
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
        if complete:
            self.s3.put_object(Bucket=self.bucket, Key=marker_key(self.prefix, model, version), Body="".join(lines).encode())

    def tamper(self, model: str, version: int, rel: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=version_prefix(self.prefix, model, version) + rel, Body=b"tampered")

    def delete_version(self, model: str, version: int) -> None:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=version_prefix(self.prefix, model, version))
        keys = [o["Key"] for o in listed.get("Contents", [])] + [marker_key(self.prefix, model, version)]
        self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys]})


def container_env(name: str) -> dict[str, str]:
    """The sync container's environment as the dev stack renders it."""
    from tests.conftest import rendered_stack

    deployment = next(m for m in rendered_stack("dev").k8s_objects() if m["kind"] == "Deployment")
    container = next(c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == name)
    # Values the kubelet fills in (the pod's name) are the test's to give.
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture
def sync_env(s3_endpoint: str, tmp_path: Path) -> Iterator[tuple[S3Store, Path, dict[str, str]]]:
    aws = program("aws", venv=True)
    program("bash")
    program("sha256sum")
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST"), timeout=10)
    script = tmp_path / "sync.sh"
    script.write_text(SYNC_SH)
    models_root = tmp_path / "models"
    models_root.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        # What the pod has: the rendered container env, but our paths and bucket.
        **container_env("model-sync-init"),
        "MODEL_BUCKET": BUCKET,
        "MODEL_PREFIX": PREFIX,
        "MODEL_ROOT": str(models_root),
        "MODELS_FILE": str(tmp_path / "models.txt"),
        "HOME": str(home),
        "PATH": f"{Path(aws).parent}:/usr/bin:/bin",
        # What Pod Identity gives the pod, here static test keys; S3 is moto.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        # Nothing may fall back to the instance metadata service (pods cannot reach it).
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "SCRIPT": str(script),
    }
    # These tests are the pod on its own; the node cache's are in tests/test_model_cache.py.
    for key in ("MODEL_CACHE", "MODEL_CACHE_MAX_KIB"):
        env.pop(key, None)
    store = S3Store(s3_endpoint)
    store.create()
    yield store, models_root, env


def run_sync(env: dict[str, str], models: str, *args: str) -> subprocess.CompletedProcess[str]:
    Path(env["MODELS_FILE"]).write_text(models)
    return subprocess.run(
        ["bash", env["SCRIPT"], *(args or ("--once",))], env=env, capture_output=True, text=True, timeout=120
    )


def local_versions(root: Path, model: str) -> list[str]:
    return sorted(p.name for p in (root / model).iterdir()) if (root / model).exists() else []


SAVED_MODEL = {"saved_model.pb": b"graph", "variables/variables.index": b"idx", "variables/variables.data-00000-of-00001": b"w"}


def test_sync_fetches_latest_complete_versions_only(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    store.put_version("resnet", 2, SAVED_MODEL)
    store.put_version("resnet", 3, SAVED_MODEL, complete=False)  # still uploading
    result = run_sync(env, "resnet latest 2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1", "2"]
    assert (root / "resnet" / "2" / "variables" / "variables.index").read_bytes() == b"idx"
    assert not list((root / ".staging").iterdir()), "staging is left clean"


def test_sync_retires_versions_no_longer_wanted(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    for v in (1, 2, 3):
        store.put_version("resnet", v, SAVED_MODEL)
    assert run_sync(env, "resnet latest 3\n").returncode == 0
    assert local_versions(root, "resnet") == ["1", "2", "3"]
    result = run_sync(env, "resnet specific 2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["2"]
    store.delete_version("resnet", 2)
    store.put_version("resnet", 4, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    assert local_versions(root, "resnet") == ["4"], "a version removed from S3 is removed locally"


def test_sync_keeps_local_versions_when_s3_has_none(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    store.delete_version("resnet", 1)
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0
    assert local_versions(root, "resnet") == ["1"]
    assert "model-sync: model resnet: version 1 is gone from S3; the copy on disk stays served" in result.stderr


def test_sync_skips_specific_versions_that_are_incomplete(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("m", 1, SAVED_MODEL)
    store.put_version("m", 2, SAVED_MODEL, complete=False)
    result = run_sync(env, "m specific 1,2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "m") == ["1"]
    assert "version 2 is not complete" in result.stderr


# Faults. The rule: whatever S3 or the credentials do, a pass that could not see or check a
# model never exits 0 as if it had synced it, names the model and what failed on stderr,
# and never changes what that model has on disk (no new version, no version removed).


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FailingS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request with one error (status and S3 error code)."""

    status, code = 503, "SlowDown"

    def _answer(self) -> None:
        body = f"<Error><Code>{self.code}</Code><Message>injected</Message></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def failing_s3(status: int, code: str) -> Iterator[str]:
    handler = type("Handler", (FailingS3,), {"status": status, "code": code})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def assert_failed_loudly(result: subprocess.CompletedProcess[str], model: str, what: str) -> None:
    assert result.returncode != 0, f"exit 0 although the sync failed:\n{result.stderr}"
    assert f"model-sync: model {model}: {what}" in result.stderr, result.stderr
    assert f"model-sync: sync failed for: {model} (they keep the versions they had)" in result.stderr


@pytest.mark.parametrize(
    "fault",
    ["bucket missing", "endpoint unreachable", "access denied", "S3 throttling", "credentials unavailable"],
)
def test_a_failing_listing_fails_the_init_pass_and_fetches_nothing(
    sync_env: tuple[S3Store, Path, dict[str, str]], fault: str
) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    with contextlib.ExitStack() as stack:
        if fault == "bucket missing":
            env["MODEL_BUCKET"] = "no-such-bucket"
        elif fault == "endpoint unreachable":
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port()}"
        elif fault == "access denied":
            env["AWS_ENDPOINT_URL"] = stack.enter_context(failing_s3(403, "AccessDenied"))
        elif fault == "S3 throttling":
            env["AWS_ENDPOINT_URL"] = stack.enter_context(failing_s3(503, "SlowDown"))
        else:
            # Pod Identity: the CLI gets credentials from the node's agent; here it is down.
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                env.pop(key)
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"http://127.0.0.1:{closed_port()}/v1/credentials"
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "token"
        result = run_sync(env, "resnet latest 1\n")
    assert_failed_loudly(result, "resnet", f"cannot list s3://{env['MODEL_BUCKET']}/models/resnet/_complete/")
    assert local_versions(root, "resnet") == [], "no model appears"


def iam_user(endpoint: str, policy: str) -> dict[str, str]:
    """Keys of a moto IAM user whose only permissions are `policy`."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="reader", PolicyDocument=policy)
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_the_reader_role_policy_is_enough_for_the_sync(
    sync_env: tuple[S3Store, Path, dict[str, str]], s3_endpoint: str
) -> None:
    """With IAM enforced, the sync runs on exactly the permissions the reader role has."""
    from moto.core.authorization import enable_iam_authentication

    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    env.update(iam_user(s3_endpoint, reader_policy(f"arn:aws:s3:::{BUCKET}", PREFIX, "arn:aws:kms:us-east-1:123456789012:key/k")))
    with enable_iam_authentication():
        result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1"]


def test_iam_denial_of_the_listing_fails_the_pass(
    sync_env: tuple[S3Store, Path, dict[str, str]], s3_endpoint: str
) -> None:
    """A role that may read objects but not list the prefix: the CLI gets AccessDenied."""
    from moto.core.authorization import enable_iam_authentication

    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    env.update(iam_user(s3_endpoint, json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}],
    })))
    with enable_iam_authentication():
        result = run_sync(env, "resnet latest 1\n")
    assert "AccessDenied" in result.stderr, result.stderr
    assert_failed_loudly(result, "resnet", "cannot list")
    assert local_versions(root, "resnet") == []


def test_a_failing_listing_never_removes_live_versions(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    store.put_version("resnet", 2, SAVED_MODEL)
    assert run_sync(env, "resnet latest 2\n").returncode == 0
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port()}"
    result = run_sync(env, "resnet latest 1\n")
    assert_failed_loudly(result, "resnet", "cannot list")
    assert local_versions(root, "resnet") == ["1", "2"], "what is live stays live"


def test_sync_refuses_a_corrupt_download(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    store.tamper("resnet", 1, "saved_model.pb")
    result = run_sync(env, "resnet latest 1\n")
    assert_failed_loudly(result, "resnet", "version 1 does not match its manifest")
    assert local_versions(root, "resnet") == [], "a version that fails its checksums never goes live"
    assert not list((root / ".staging").iterdir()), "the rejected download is cleaned up"


def test_one_failing_model_does_not_stop_the_others(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("bad", 1, SAVED_MODEL)
    store.tamper("bad", 1, "variables/variables.index")
    store.put_version("good", 1, SAVED_MODEL)
    result = run_sync(env, "bad latest 1\ngood latest 1\n")
    assert result.returncode != 0
    assert "model-sync: sync failed for: bad (" in result.stderr, result.stderr
    assert local_versions(root, "good") == ["1"] and local_versions(root, "bad") == []


def test_the_sidecar_logs_each_failed_pass_and_retries_until_s3_answers(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    store, root, env = sync_env
    env["MODEL_BUCKET"] = "published-later"
    env["SYNC_INTERVAL_SECONDS"] = "1"
    Path(env["MODELS_FILE"]).write_text("resnet latest 1\n")
    sidecar = Sidecar(env)
    try:
        sidecar.wait_for(lambda xs: sum(RETRY in x for x in xs) >= 2)
        assert sidecar.process.poll() is None, "the sidecar keeps running after failed passes"
        later = S3Store(store.s3.meta.endpoint_url, bucket="published-later")
        later.create()
        later.put_version("resnet", 7, SAVED_MODEL)
        sidecar.wait_for(lambda xs: any("model resnet: version 7 is live" in x for x in xs))
    finally:
        sidecar.stop()
    assert any("cannot list s3://published-later/" in x for x in sidecar.seen), "".join(sidecar.seen)
    assert local_versions(root, "resnet") == ["7"]


def test_sync_scripts_are_valid_bash() -> None:
    program("bash")
    for text in (SYNC_SH, READY_SH):
        assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0


def test_sync_scripts_pass_shellcheck() -> None:
    """Every default check, plus the optional ones on `set -e` being suppressed (the class
    of the silent listing failure); deliberate exceptions carry a directive and a reason."""
    shellcheck = program("shellcheck", venv=True)
    for name, text in (("model-sync.sh", SYNC_SH), ("model-ready.sh", READY_SH)):
        result = subprocess.run(
            [shellcheck, "--shell=bash", "--severity=info", "--format=gcc",
             "--enable=check-set-e-suppressed,check-extra-masked-returns", "-"],
            input=text, text=True, capture_output=True,
        )
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_every_configured_model_has_its_base_path_before_it_is_published(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    """TF Serving polls every model's base path in one pass and a missing one fails the pass
    for all of them (tensorflow/serving sources/storage_path/file_system_storage_path_source.cc,
    PollFileSystemForConfig returns the first PollFileSystemForServable error): on a first
    deploy, publishing one model must be enough for it to load while another is unpublished."""
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    result = run_sync(env, "resnet latest 1\nbert specific 2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1"]
    assert (root / "bert").is_dir() and local_versions(root, "bert") == []


# Credentials refused: the keys are wrong (rotated, revoked), not missing. With IAM enforced,
# moto answers InvalidAccessKeyId for keys it never issued, as S3 does.
REFUSED_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7INVALID", "AWS_SECRET_ACCESS_KEY": "wrong"}


def test_refused_credentials_fail_the_init_pass_loudly(sync_env: tuple[S3Store, Path, dict[str, str]]) -> None:
    from moto.core.authorization import enable_iam_authentication

    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    env.update(REFUSED_KEYS)
    with enable_iam_authentication():
        result = run_sync(env, "resnet latest 1\n")
    assert "InvalidAccessKeyId" in result.stderr, result.stderr
    assert_failed_loudly(result, "resnet", f"cannot list s3://{BUCKET}/models/resnet/_complete/")
    assert local_versions(root, "resnet") == []


class Sidecar:
    """The sync script in its looping form, its stderr collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(["bash", env["SCRIPT"]], env=env, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr or ():
            self.lines.put(line)

    def wait_for(self, predicate: Callable[[list[str]], bool], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not predicate(self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail("the sidecar did not log what was expected in time:\n" + "".join(self.seen))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


RETRY = "model-sync: sync pass failed for: resnet (they keep the versions they had); next try in 1s"


def test_the_sidecar_keeps_serving_when_credentials_are_refused(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    """Keys revoked while the pod runs: every pass fails, says why once, and removes nothing."""
    from moto.core.authorization import enable_iam_authentication

    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    env.update(REFUSED_KEYS, SYNC_INTERVAL_SECONDS="1")
    with enable_iam_authentication():
        sidecar = Sidecar(env)
        try:
            sidecar.wait_for(lambda xs: sum(RETRY in x for x in xs) >= 3)
            assert sidecar.process.poll() is None, "the sidecar keeps running"
        finally:
            sidecar.stop()
    assert local_versions(root, "resnet") == ["1"], "what is live stays live"
    # Each attempt, up to its retry line: one line naming the model, what failed and the
    # CLI's reason, then the pass's one line saying when it retries; nothing else.
    attempts: list[list[str]] = [[]]
    for line in sidecar.seen:
        attempts[-1].append(line)
        if RETRY in line:
            attempts.append([])
    for attempt in attempts[:3]:
        assert len(attempt) == 2, "".join(attempt)
        failure, retry = attempt
        assert failure.startswith(f"model-sync: model resnet: cannot list s3://{BUCKET}/models/resnet/_complete/: "), failure
        assert "InvalidAccessKeyId" in failure, failure
        assert retry.rstrip("\n") == RETRY


# A download cut short. The AWS CLI on PATH is wrapped: armed by a file, the next recursive
# copy writes only part of the version (the real CLI, `--exclude 'variables/*'`) and then
# either dies by SIGKILL (the CLI killed mid-copy) or hangs, so the test can kill the whole
# sync process group as a pod eviction or an OOM kill would.
AWS_WRAPPER = """#!/bin/bash
if [[ " $* " == *" --recursive "* ]] && rm "$FAULT_ARMED" 2>/dev/null; then
  "$REAL_AWS" "$@" --exclude 'variables/*' || exit
  if [ "$FAULT" = hang ]; then touch "$FAULT_HUNG"; sleep 120; fi
  kill -KILL $$
fi
exec "$REAL_AWS" "$@"
"""


def arm_cut_download(env: dict[str, str], tmp: Path, mode: str) -> Path:
    wrapper_dir = tmp / "wrapped-bin"
    wrapper_dir.mkdir(exist_ok=True)
    wrapper = wrapper_dir / "aws"
    wrapper.write_text(AWS_WRAPPER)
    wrapper.chmod(0o755)
    real_aws = shutil.which("aws", path=env["PATH"])
    assert real_aws and Path(real_aws).parent != wrapper_dir
    armed = tmp / "fault-armed"
    armed.touch()
    env.update(REAL_AWS=real_aws, FAULT=mode, FAULT_ARMED=str(armed), FAULT_HUNG=str(tmp / "fault-hung"),
               PATH=f"{wrapper_dir}:{env['PATH']}")
    return armed


def assert_version_is(root: Path, model: str, version: int, files: dict[str, bytes]) -> None:
    folder = root / model / str(version)
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == files


def test_a_download_cut_short_is_never_visible_and_the_next_pass_completes_it(
    sync_env: tuple[S3Store, Path, dict[str, str]], tmp_path: Path
) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    store.put_version("resnet", 2, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    store.put_version("resnet", 3, {**SAVED_MODEL, "saved_model.pb": b"graph 3"})
    armed = arm_cut_download(env, tmp_path, "die")
    result = run_sync(env, "resnet latest 1\n")
    assert not armed.exists(), "the fault was injected"
    assert_failed_loudly(result, "resnet", "cannot download version 3 from")
    assert local_versions(root, "resnet") == ["2"], "the served version stays; no partial version 3"
    assert not list((root / ".staging").iterdir()), "the partial download is cleaned up"
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["3"]
    assert_version_is(root, "resnet", 3, {**SAVED_MODEL, "saved_model.pb": b"graph 3"})


def test_a_sync_killed_mid_download_leaves_only_staging_files_and_the_next_pass_completes(
    sync_env: tuple[S3Store, Path, dict[str, str]], tmp_path: Path
) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    arm_cut_download(env, tmp_path, "hang")
    Path(env["MODELS_FILE"]).write_text("resnet latest 1\n")
    sync = subprocess.Popen(["bash", env["SCRIPT"], "--once"], env=env, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not Path(env["FAULT_HUNG"]).exists():
            assert sync.poll() is None and time.monotonic() < deadline, "the fault never hung the copy"
            time.sleep(0.05)
        partial = {p.relative_to(root / ".staging").as_posix() for p in (root / ".staging").rglob("*") if p.is_file()}
        assert "resnet-1/saved_model.pb" in partial and "resnet-1/variables/variables.index" not in partial
        assert local_versions(root, "resnet") == [], "TF Serving's base path shows nothing of it"
    finally:
        os.killpg(sync.pid, 9)  # the whole pod's processes, mid-copy
        sync.wait(timeout=10)
    assert local_versions(root, "resnet") == []
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert_version_is(root, "resnet", 1, SAVED_MODEL)
    assert not list((root / ".staging").iterdir()), "the next pass replaced the leftovers"


def test_a_file_deleted_after_its_version_was_published_keeps_the_version_out(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    """An object that disappears from a complete version: the manifest check refuses it."""
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    key = version_prefix(PREFIX, "resnet", 1) + "variables/variables.data-00000-of-00001"
    store.s3.delete_object(Bucket=BUCKET, Key=key)
    result = run_sync(env, "resnet latest 1\n")
    assert_failed_loudly(result, "resnet", "version 1 does not match its manifest")
    assert local_versions(root, "resnet") == []
    store.put_version("resnet", 1, SAVED_MODEL)  # republished
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    assert_version_is(root, "resnet", 1, SAVED_MODEL)


# A version deleted from S3 while it is served stays until a newer complete version is live
# (the rule and its reasons: the header of components/scripts/model-sync.sh).


def test_a_served_version_deleted_from_s3_stays_until_a_newer_one_is_live(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    store, root, env = sync_env
    for v in (1, 2):
        store.put_version("resnet", v, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    store.delete_version("resnet", 2)
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["2"], "not swapped for the older version 1"
    assert "model-sync: model resnet: version 2 is gone from S3; the copy on disk stays served" in result.stderr
    store.put_version("resnet", 3, SAVED_MODEL)
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["3"], "retired once a newer complete version is live"


def test_a_deleted_version_is_kept_while_a_newer_one_fails_to_arrive(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 2, SAVED_MODEL)
    assert run_sync(env, "resnet latest 2\n").returncode == 0
    store.delete_version("resnet", 2)
    store.put_version("resnet", 3, SAVED_MODEL)
    store.tamper("resnet", 3, "saved_model.pb")
    result = run_sync(env, "resnet latest 1\n")
    assert_failed_loudly(result, "resnet", "version 3 does not match its manifest")
    assert local_versions(root, "resnet") == ["2"], "the model is never left with no version"


def test_a_listed_specific_version_deleted_from_s3_stays_while_the_config_lists_it(
    sync_env: tuple[S3Store, Path, dict[str, str]],
) -> None:
    store, root, env = sync_env
    for v in (1, 2):
        store.put_version("resnet", v, SAVED_MODEL)
    assert run_sync(env, "resnet specific 1,2\n").returncode == 0
    store.delete_version("resnet", 2)
    result = run_sync(env, "resnet specific 1,2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1", "2"]
    result = run_sync(env, "resnet specific 1\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1"], "the config still decides what is retired"


# The publisher's round trip: what tools/publish_model.py uploads, the sync brings back
# byte for byte (S3 keeps no empty folders, so the tree has none).


def saved_model_tree(root: Path) -> dict[str, bytes]:
    files = {
        "saved_model.pb": bytes(range(256)) * 40,
        "fingerprint.pb": b"\x00\x01\x02\xff",
        "variables/variables.index": b"\x00index\n\r\n\x00",
        "variables/variables.data-00000-of-00001": os.urandom(200_000),
        "assets/vocab.txt": "token\nünïcødé\n".encode(),
        "assets/label map.txt": b"a space in the name\n",
        "assets/empty": b"",
        "assets/nested/deeper/table.bin": os.urandom(3000),
        "assets.extra/tf_serving_warmup_requests": os.urandom(512),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_a_version_published_by_the_publisher_syncs_back_byte_identical(
    sync_env: tuple[S3Store, Path, dict[str, str]], tmp_path: Path
) -> None:
    from tools import publish_model

    store, root, env = sync_env
    source = tmp_path / "export" / "4"
    files = saved_model_tree(source)
    status = publish_model.main(
        ["--stack", "dev", "--model", "resnet", "--version", "4", "--path", str(source),
         "--bucket", BUCKET, "--prefix", PREFIX],
        s3=store.s3,
    )
    assert status == 0
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0, result.stderr
    synced = root / "resnet" / "4"
    paths = {p.relative_to(synced).as_posix() for p in synced.rglob("*")}
    assert paths == {p.relative_to(source).as_posix() for p in source.rglob("*")}, "same files and folders"
    assert_version_is(root, "resnet", 4, files)
