"""Model store: bucket safety, least-privilege identities, and the model sync script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from components.model_layout import marker_key, version_prefix
from components.model_store import SYNC_IMAGE, READY_SH, SYNC_SH, ModelSync, models_file
from tests.support import raw_stack, render_raw
from tools.mock_engine import Rendering


def inputs(r: Rendering, type_token: str, name: str) -> dict:
    return r.one(type_token, name).inputs


def test_bucket_is_versioned_encrypted_private_and_tls_only(prod: Rendering) -> None:
    bucket = prod.one("aws:s3/bucket:Bucket", "models-bucket")
    assert bucket.inputs["bucket"] == "tfs-prod-models-123456789012"
    assert bucket.inputs["forceDestroy"] is False
    assert inputs(prod, "aws:s3/bucketVersioning:BucketVersioning", "models-versioning")[
        "versioningConfiguration"
    ] == {"status": "Enabled"}
    rule = inputs(prod, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "models-encryption")["rules"][0]
    key = prod.one("aws:kms/key:Key", "models-key")
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == prod.outputs["model_key_arn"]
    assert rule["bucketKeyEnabled"] is True
    assert key.inputs["enableKeyRotation"] is True
    block = inputs(prod, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "models-public-access-block")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    ownership = inputs(prod, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "models-ownership")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    policy = json.loads(inputs(prod, "aws:s3/bucketPolicy:BucketPolicy", "models-tls-only")["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_arn = "arn:aws:s3:::tfs-prod-models-123456789012"
    assert deny["Resource"] == [bucket_arn, f"{bucket_arn}/*"]


def test_noncurrent_versions_expire_per_environment(dev: Rendering, prod: Rendering) -> None:
    for r, days in ((dev, 7), (prod, 90)):
        rule = inputs(r, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "models-lifecycle")["rules"][0]
        assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": days}
        assert rule["status"] == "Enabled"


def test_prod_protects_bucket_and_key_and_logs_access(dev: Rendering, prod: Rendering) -> None:
    for name, token in (("models-bucket", "aws:s3/bucket:Bucket"), ("models-key", "aws:kms/key:Key")):
        assert prod.one(token, name).protect and prod.one(token, name).retain_on_delete
        assert not dev.one(token, name).protect and not dev.one(token, name).retain_on_delete
    logging = inputs(prod, "aws:s3/bucketLogging:BucketLogging", "models-access-logging")
    logs = prod.one("aws:s3/bucket:Bucket", "models-access-logs")
    assert logging["targetBucket"] == logs.inputs["bucket"]
    assert not dev.of_type("aws:s3/bucketLogging:BucketLogging")


def reader_statements(r: Rendering) -> list[dict]:
    return json.loads(inputs(r, "aws:iam/rolePolicy:RolePolicy", "models-reader-policy")["policy"])["Statement"]


def test_reader_role_is_scoped_to_the_prefix(prod: Rendering) -> None:
    statements = {s["Sid"]: s for s in reader_statements(prod)}
    bucket_arn = "arn:aws:s3:::tfs-prod-models-123456789012"
    assert statements["ListModelPrefix"] == {
        "Sid": "ListModelPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
        "Condition": {"StringLike": {"s3:prefix": ["models/", "models/*"]}},
    }
    assert statements["ReadModels"]["Action"] == "s3:GetObject"
    assert statements["ReadModels"]["Resource"] == f"{bucket_arn}/models/*"
    assert statements["DecryptModels"]["Action"] == "kms:Decrypt"
    assert statements["DecryptModels"]["Resource"] == prod.outputs["model_key_arn"]
    actions = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}


def test_pod_identity_binds_the_serving_service_account(prod: Rendering) -> None:
    assoc = inputs(prod, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "models-reader-identity")
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("tf-serving", "tf-serving")
    assert assoc["roleArn"] == prod.outputs["model_reader_role_arn"]
    trust = json.loads(inputs(prod, "aws:iam/role:Role", "models-reader-role")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}


def test_irsa_mode_trusts_only_the_service_account() -> None:
    raw = raw_stack("dev")
    raw["model_store"]["identity"] = "irsa"
    r = render_raw(raw)
    assert not r.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation") or all(
        not x.name.startswith("models-") for x in r.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    )
    statement = json.loads(inputs(r, "aws:iam/role:Role", "models-reader-role")["assumeRolePolicy"])["Statement"][0]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"] == r.outputs["oidc_provider_arn"]
    conditions = statement["Condition"]["StringEquals"]
    assert "system:serviceaccount:tf-serving:tf-serving" in conditions.values()
    account = next(m for m in r.k8s_objects() if m["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == r.outputs["model_reader_role_arn"]


def test_publisher_policy_writes_only_the_prefix_and_prod_has_a_role(dev: Rendering, prod: Rendering) -> None:
    policy = json.loads(inputs(prod, "aws:iam/policy:Policy", "models-publisher-policy")["policy"])
    write = next(s for s in policy["Statement"] if s["Sid"] == "WriteModels")
    assert write["Resource"].endswith("/models/*")
    assert set(write["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    trust = json.loads(inputs(prod, "aws:iam/role:Role", "models-publisher-role")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"AWS": ["arn:aws:iam::123456789012:role/ci-deployer"]}
    assert prod.outputs["model_publisher_role_arn"]
    assert dev.outputs["model_publisher_role_arn"] is None
    assert dev.outputs["model_publisher_policy_arn"]


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


# --- the sync script, run for real against a stand-in `aws` command ------------------------

FAKE_AWS = r"""#!/bin/bash
# Stand-in for the AWS CLI: serves s3://BUCKET/KEY from $FAKE_S3/BUCKET/KEY.
set -euo pipefail
if [ "$1" = s3api ] && [ "$2" = list-objects-v2 ]; then
  shift 2; bucket=""; prefix=""
  while [ $# -gt 0 ]; do case "$1" in --bucket) bucket="$2"; shift 2;; --prefix) prefix="$2"; shift 2;; *) shift;; esac; done
  root="$FAKE_S3/$bucket"
  keys="$(cd "$root" && find . -type f | sed 's#^\./##' | grep "^$prefix" || true)"
  if [ -z "$keys" ]; then echo None; else printf '%s\n' "$keys" | paste -sd '\t'; fi
  exit 0
fi
if [ "$1" = s3 ] && [ "$2" = cp ]; then
  shift 2; recursive=no; args=()
  for a in "$@"; do case "$a" in --recursive) recursive=yes;; --only-show-errors) ;; *) args+=("$a");; esac; done
  src="${args[0]#s3://}"; dest="${args[1]}"
  if [ "$recursive" = yes ]; then mkdir -p "$dest" && cp -R "$FAKE_S3/$src". "$dest"
  else cp "$FAKE_S3/$src" "$dest"; fi
  exit 0
fi
echo "fake aws: unsupported $*" >&2; exit 2
"""


class FakeStore:
    def __init__(self, root: Path, bucket: str = "b", prefix: str = "models") -> None:
        self.root, self.bucket, self.prefix = root, bucket, prefix

    def put_version(self, model: str, version: int, files: dict[str, bytes], complete: bool = True) -> None:
        base = self.root / self.bucket / version_prefix(self.prefix, model, version)
        lines = []
        for rel, data in sorted(files.items()):
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}\n")
        if complete:
            marker = self.root / self.bucket / marker_key(self.prefix, model, version)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("".join(lines))

    def delete_version(self, model: str, version: int) -> None:
        (self.root / self.bucket / marker_key(self.prefix, model, version)).unlink()
        shutil.rmtree(self.root / self.bucket / version_prefix(self.prefix, model, version))


@pytest.fixture
def sync_env(tmp_path: Path) -> tuple[FakeStore, Path, dict[str, str]]:
    if shutil.which("bash") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs bash and sha256sum")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aws"
    fake.write_text(FAKE_AWS)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    script = tmp_path / "sync.sh"
    script.write_text(SYNC_SH)
    models_root = tmp_path / "models"
    models_root.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_S3": str(tmp_path / "s3"),
        "MODEL_BUCKET": "b",
        "MODEL_PREFIX": "models",
        "MODEL_ROOT": str(models_root),
        "MODELS_FILE": str(tmp_path / "models.txt"),
        "SCRIPT": str(script),
    }
    return FakeStore(tmp_path / "s3"), models_root, env


def run_sync(env: dict[str, str], models: str) -> subprocess.CompletedProcess[str]:
    Path(env["MODELS_FILE"]).write_text(models)
    return subprocess.run(["bash", env["SCRIPT"], "--once"], env=env, capture_output=True, text=True, timeout=60)


def local_versions(root: Path, model: str) -> list[str]:
    return sorted(p.name for p in (root / model).iterdir()) if (root / model).exists() else []


SAVED_MODEL = {"saved_model.pb": b"graph", "variables/variables.index": b"idx", "variables/variables.data-00000-of-00001": b"w"}


def test_sync_fetches_latest_complete_versions_only(sync_env: tuple[FakeStore, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    store.put_version("resnet", 2, SAVED_MODEL)
    store.put_version("resnet", 3, SAVED_MODEL, complete=False)  # still uploading
    result = run_sync(env, "resnet latest 2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "resnet") == ["1", "2"]
    assert (root / "resnet" / "2" / "variables" / "variables.index").read_bytes() == b"idx"
    assert not list((root / ".staging").iterdir()), "staging is left clean"


def test_sync_retires_versions_no_longer_wanted(sync_env: tuple[FakeStore, Path, dict[str, str]]) -> None:
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


def test_sync_refuses_a_corrupt_download(sync_env: tuple[FakeStore, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    (store.root / "b" / "models" / "resnet" / "1" / "saved_model.pb").write_bytes(b"tampered")
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode != 0
    assert local_versions(root, "resnet") == [], "a version that fails its checksums never goes live"


def test_sync_keeps_local_versions_when_s3_has_none(sync_env: tuple[FakeStore, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("resnet", 1, SAVED_MODEL)
    assert run_sync(env, "resnet latest 1\n").returncode == 0
    store.delete_version("resnet", 1)
    result = run_sync(env, "resnet latest 1\n")
    assert result.returncode == 0
    assert local_versions(root, "resnet") == ["1"]
    assert "keeping local versions" in result.stderr


def test_sync_skips_specific_versions_that_are_incomplete(sync_env: tuple[FakeStore, Path, dict[str, str]]) -> None:
    store, root, env = sync_env
    store.put_version("m", 1, SAVED_MODEL)
    store.put_version("m", 2, SAVED_MODEL, complete=False)
    result = run_sync(env, "m specific 1,2\n")
    assert result.returncode == 0, result.stderr
    assert local_versions(root, "m") == ["1"]
    assert "version 2 is not complete" in result.stderr


def test_ready_script_is_valid_bash() -> None:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    for text in (SYNC_SH, READY_SH):
        assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0
