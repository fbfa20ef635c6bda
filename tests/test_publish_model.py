"""Publishing models to the S3 model store (tools/lib/model_repository.py, tools/publish_model.py),
against moto: validation, marker last, refusals, --force, warm-up requests uploaded inside the
version, listing, and the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws
from tensorflow_serving.apis import prediction_log_pb2

from components.model_layout import marker_key, model_bucket_name, version_prefix
from tools import publish_model
from tools.lib import stack_store
from tools.lib.model_repository import (
    PublishError,
    VersionInfo,
    list_versions,
    model_files,
    publish,
    validate_saved_model,
    version_is_complete,
)
from tools.lib.stackfile import ROOT, load_stack_file
from tools.lib.warmup import WARMUP_FILE, warmup_file
from tests.support.saved_models import Signature, saved_model, write_version
from tests.support.tfrecord_reader import records
from tests.support.aws import fake_credentials, no_deployed_stack  # noqa: F401 (autouse)

BUCKET = "models-test-bucket"
PREFIX = "models"
FILES: Mapping[str, bytes] = {
    "saved_model.pb": b"graph-def",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"weights-0",
    "assets/vocab.txt": b"cat\ndog\n",
    "assets.extra/tf_serving_warmup_requests": b"warmup",
}
TOTAL_BYTES = sum(len(data) for data in FILES.values())


def make_model(root: Path, files: Mapping[str, bytes] = FILES) -> Path:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    return root


def keys(s3: Any, bucket: str = BUCKET, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def sha256sum(files: Mapping[str, bytes]) -> str:
    return "".join(
        f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n" for rel in sorted(files)
    )


def read(s3: Any, key: str, bucket: str = BUCKET) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


class RecordingS3:
    """A real client that records every upload, in order: (key, checksum algorithm)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.writes: list[tuple[str, str | None]] = []

    def put_object(self, **kwargs: Any) -> Any:
        self.writes.append((kwargs["Key"], kwargs.get("ChecksumAlgorithm")))
        return self._client.put_object(**kwargs)

    def upload_file(self, Filename: str, Bucket: str, Key: str, **kwargs: Any) -> Any:
        self.writes.append((Key, (kwargs.get("ExtraArgs") or {}).get("ChecksumAlgorithm")))
        return self._client.upload_file(Filename, Bucket, Key, **kwargs)

    def upload_fileobj(self, Fileobj: Any, Bucket: str, Key: str, **kwargs: Any) -> Any:
        self.writes.append((Key, (kwargs.get("ExtraArgs") or {}).get("ChecksumAlgorithm")))
        return self._client.upload_fileobj(Fileobj, Bucket, Key, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class SmallPages:
    """A real client whose listings come two keys a page; counts the pages read."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.pages = 0

    def get_paginator(self, name: str) -> SmallPages:
        assert name == "list_objects_v2"
        return self

    def paginate(self, **kwargs: Any) -> Iterator[Any]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(PaginationConfig={"PageSize": 2}, **kwargs):
            self.pages += 1
            yield page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class NoClient:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected AWS call: {name}")


def access_denied(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, operation)


class DeniedS3:
    """A real client on which S3 refuses the `denied` calls: "list", "put" (files and marker)."""

    def __init__(self, client: Any, *denied: str) -> None:
        self._client = client
        self._denied = set(denied)

    def get_paginator(self, name: str) -> DeniedS3:
        return self

    def paginate(self, **kwargs: Any) -> Iterator[Any]:
        if "list" in self._denied:
            raise access_denied("ListObjectsV2")
        yield from self._client.get_paginator("list_objects_v2").paginate(**kwargs)

    def upload_file(self, *args: Any, **kwargs: Any) -> Any:
        if "put" in self._denied:
            raise access_denied("PutObject")
        return self._client.upload_file(*args, **kwargs)

    def upload_fileobj(self, *args: Any, **kwargs: Any) -> Any:
        if "put" in self._denied:
            raise access_denied("PutObject")
        return self._client.upload_fileobj(*args, **kwargs)

    def put_object(self, **kwargs: Any) -> Any:
        if "put" in self._denied:
            raise access_denied("PutObject")
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "export" / "3")


# --- publishing -------------------------------------------------------------------------


def test_publish_then_list_shows_a_complete_version(s3: Any, model: Path) -> None:
    result = publish(s3, BUCKET, PREFIX, "resnet", 3, model)

    assert (result.files, result.bytes, result.replaced) == (5, TOTAL_BYTES, 0)
    assert result.version_prefix == "models/resnet/3/"
    assert keys(s3) == sorted(
        [f"models/resnet/3/{rel}" for rel in FILES] + ["models/resnet/_complete/3.sha256"]
    )
    assert read(s3, "models/resnet/3/assets/vocab.txt") == b"cat\ndog\n"
    assert list_versions(s3, BUCKET, PREFIX, "resnet") == [
        VersionInfo(version=3, complete=True, files=5, bytes=TOTAL_BYTES, problem=None)
    ]
    assert version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)
    assert not version_is_complete(s3, BUCKET, PREFIX, "resnet", 4)


def test_marker_is_written_last_and_holds_each_files_sha256(s3: Any, model: Path) -> None:
    recording = RecordingS3(s3)
    reported: list[int] = []

    publish(recording, BUCKET, PREFIX, "resnet", 3, model, progress=reported.append)

    marker = marker_key(PREFIX, "resnet", 3)
    written = [key for key, _ in recording.writes]
    assert written[-1] == marker
    assert sorted(written) == keys(s3), "every object in the bucket went through the recorder"
    assert all(algorithm == "SHA256" for _, algorithm in recording.writes)
    assert read(s3, marker).decode() == sha256sum(FILES)
    assert sum(reported) == TOTAL_BYTES
    stored = s3.head_object(
        Bucket=BUCKET, Key="models/resnet/3/saved_model.pb", ChecksumMode="ENABLED"
    )
    assert "ChecksumSHA256" in stored


def test_refuses_to_overwrite_a_published_version(s3: Any, model: Path) -> None:
    publish(s3, BUCKET, PREFIX, "resnet", 3, model)
    (model / "saved_model.pb").write_bytes(b"another graph")

    with pytest.raises(PublishError, match="already published") as refused:
        publish(s3, BUCKET, PREFIX, "resnet", 3, model)

    assert "--force" in str(refused.value)
    assert read(s3, "models/resnet/3/saved_model.pb") == b"graph-def"
    assert read(s3, marker_key(PREFIX, "resnet", 3)).decode() == sha256sum(FILES)


def test_refuses_a_half_finished_version_and_lists_it_incomplete(s3: Any, model: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="models/resnet/3/saved_model.pb", Body=b"partial")

    with pytest.raises(PublishError, match="no completion marker") as refused:
        publish(s3, BUCKET, PREFIX, "resnet", 3, model)

    assert "--force" in str(refused.value)
    assert keys(s3) == ["models/resnet/3/saved_model.pb"]
    assert list_versions(s3, BUCKET, PREFIX, "resnet") == [
        VersionInfo(3, False, 1, 7, "no completion marker (upload running or interrupted)")
    ]
    assert not version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)


def test_force_replaces_a_version_and_removes_its_stale_files(
    s3: Any, tmp_path: Path
) -> None:
    old = make_model(tmp_path / "old", {**FILES, "assets/stale.txt": b"old"})
    publish(s3, BUCKET, PREFIX, "resnet", 3, old)
    new_files = {**FILES, "saved_model.pb": b"new graph"}
    new = make_model(tmp_path / "new", new_files)

    result = publish(s3, BUCKET, PREFIX, "resnet", 3, new, force=True)

    assert result.replaced == 7  # six files and the marker
    assert "models/resnet/3/assets/stale.txt" not in keys(s3)
    assert keys(s3, prefix="models/resnet/3/") == sorted(f"models/resnet/3/{r}" for r in FILES)
    assert read(s3, "models/resnet/3/saved_model.pb") == b"new graph"
    assert read(s3, marker_key(PREFIX, "resnet", 3)).decode() == sha256sum(new_files)
    assert version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)


def test_force_completes_a_half_finished_version(s3: Any, model: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="models/resnet/3/variables/junk", Body=b"x")

    publish(s3, BUCKET, PREFIX, "resnet", 3, model, force=True)

    assert "models/resnet/3/variables/junk" not in keys(s3)
    assert [v.complete for v in list_versions(s3, BUCKET, PREFIX, "resnet")] == [True]


def test_invalid_model_is_refused_before_any_upload(s3: Any, model: Path) -> None:
    (model / "saved_model.pb").unlink()

    with pytest.raises(PublishError) as refused:
        publish(s3, BUCKET, PREFIX, "resnet", 3, model)

    assert refused.value.problems == [
        f"{model / 'saved_model.pb'} is missing (and no saved_model.pbtxt either)"
    ]
    assert keys(s3) == []


# --- reading the store ------------------------------------------------------------------


def test_marker_without_files_is_reported_incomplete(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=marker_key(PREFIX, "resnet", 5), Body=sha256sum(FILES))

    assert list_versions(s3, BUCKET, PREFIX, "resnet") == [
        VersionInfo(5, False, 0, 0, "completion marker but no files (deleted after publishing?)")
    ]
    assert not version_is_complete(s3, BUCKET, PREFIX, "resnet", 5)


def test_version_is_complete_needs_every_file_the_marker_lists(s3: Any, model: Path) -> None:
    publish(s3, BUCKET, PREFIX, "resnet", 3, model)
    s3.delete_object(Bucket=BUCKET, Key="models/resnet/3/variables/variables.index")

    assert not version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)


def test_a_malformed_marker_is_not_complete(s3: Any, model: Path) -> None:
    publish(s3, BUCKET, PREFIX, "resnet", 3, model)
    s3.put_object(Bucket=BUCKET, Key=marker_key(PREFIX, "resnet", 3), Body=b"saved_model.pb\n")

    assert not version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)


def test_list_versions_reads_every_page_and_sorts_numerically(s3: Any) -> None:
    for version in (2, 10, 9):
        key = f"{version_prefix(PREFIX, 'resnet', version)}saved_model.pb"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"12345")
    for version in (2, 10):
        s3.put_object(Bucket=BUCKET, Key=marker_key(PREFIX, "resnet", version), Body=b"")
    for other in ("models/resnet/notes.txt", "models/resnet/latest/x", "models/resnet/007/x",
                  "models/resnet/_complete/readme", "models/resnetv2/1/x"):
        s3.put_object(Bucket=BUCKET, Key=other, Body=b"x")
    paged = SmallPages(s3)

    versions = list_versions(paged, BUCKET, PREFIX, "resnet")

    assert [(v.version, v.complete, v.files, v.bytes) for v in versions] == [
        (2, True, 1, 5),
        (9, False, 1, 5),
        (10, True, 1, 5),
    ]
    assert paged.pages >= 5  # ten keys under models/resnet/, two a page


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        FILES,
        {"saved_model.pbtxt": b"text graph", "variables/variables.index": b"i",
         "variables/variables.data-00000-of-00001": b"d"},
        {"saved_model.pb": b"graph"},  # no variables at all
        {"saved_model.pb": b"g", "variables/variables.index": b"i",
         "variables/variables.data-00000-of-00002": b"d0",
         "variables/variables.data-00001-of-00002": b"d1", "fingerprint.pb": b"f"},
    ],
    ids=["full", "pbtxt", "no-variables", "two-shards"],
)
def test_valid_saved_models_have_no_problems(tmp_path: Path, files: Mapping[str, bytes]) -> None:
    assert validate_saved_model(make_model(tmp_path / "1", files), 1) == []


def _without(*names: str) -> dict[str, bytes]:
    return {rel: data for rel, data in FILES.items() if rel not in names}


SHARD = "variables.data-{:05d}-of-{:05d}"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            _without("saved_model.pb"),
            ["{m}/saved_model.pb is missing (and no saved_model.pbtxt either)"],
            id="no-graph",
        ),
        pytest.param(
            {**_without("variables/variables.data-00000-of-00001"),
             "variables/" + SHARD.format(0, 2): b"d0"},
            ["{m}/variables/" + SHARD.format(1, 2) + " is missing"],
            id="missing-shard",
        ),
        pytest.param(
            {**FILES, "variables/" + SHARD.format(0, 2): b"d0"},
            ["{m}/variables: data shards from different saves (of-00001, of-00002)"],
            id="mixed-shard-counts",
        ),
        pytest.param(
            {**FILES, "variables/" + SHARD.format(1, 1): b"d1"},
            ["{m}/variables/" + SHARD.format(1, 1) + " is out of range for 1 shard(s)"],
            id="shard-out-of-range",
        ),
        pytest.param(
            _without("variables/variables.data-00000-of-00001"),
            ["{m}/variables has no data shard (variables.data-00000-of-00001, ...)"],
            id="index-without-data",
        ),
        pytest.param(
            _without("variables/variables.index"),
            ["{m}/variables/variables.index is missing; the data shards can't be read without it"],
            id="data-without-index",
        ),
    ],
)
def test_validation_problems_name_the_file(
    tmp_path: Path, files: Mapping[str, bytes], expected: list[str]
) -> None:
    model = make_model(tmp_path / "3", files)

    assert validate_saved_model(model, 3) == [e.format(m=model) for e in expected]


def test_empty_variables_folder_is_a_problem(tmp_path: Path) -> None:
    model = make_model(tmp_path / "3", {"saved_model.pb": b"g"})
    (model / "variables").mkdir()

    assert validate_saved_model(model, 3) == [
        f"{model}/variables/variables.index is missing; the data shards can't be read without it",
        f"{model}/variables has no data shard (variables.data-00000-of-00001, ...)",
    ]


@pytest.mark.parametrize("version", [0, -1])
def test_version_must_be_positive(model: Path, version: int) -> None:
    assert validate_saved_model(model, version) == [
        f"version {version} is not a positive integer; versions are folders named 1, 2, ..."
    ]


def test_empty_or_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "empty" / "variables").mkdir(parents=True)

    assert validate_saved_model(tmp_path / "empty", 1) == [
        f"{tmp_path / 'empty'} is empty; expected a SavedModel (saved_model.pb, variables/)"
    ]
    assert validate_saved_model(tmp_path / "nope", 1) == [f"{tmp_path / 'nope'} is not a directory"]


def test_symlinks_must_stay_inside_the_model(tmp_path: Path, model: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the bucket")
    (model / "assets" / "leak.txt").symlink_to(secret)
    (model / "assets" / "alias.txt").symlink_to(model / "assets" / "vocab.txt")
    (model / "assets" / "gone.txt").symlink_to(tmp_path / "missing")

    assert validate_saved_model(model, 3) == [
        f"{model}/assets/gone.txt is a broken symlink",
        f"{model}/assets/leak.txt is a symlink to {secret.resolve()}, outside the model directory",
    ]


def test_symlinked_directories_are_refused(tmp_path: Path, model: Path) -> None:
    (model / "assets.extra" / "more").symlink_to(model / "assets", target_is_directory=True)

    assert validate_saved_model(model, 3) == [
        f"{model}/assets.extra/more is a symlink to a directory; copy the directory instead"
    ]


# --- the command ------------------------------------------------------------------------


@pytest.fixture
def sts(s3: Any) -> Any:
    return boto3.client("sts", region_name="us-east-1")


def dev_store(sts: Any) -> tuple[str, str]:
    """The dev stack's model bucket and prefix, derived as the stack derives them."""
    cfg = load_stack_file("dev")
    return model_bucket_name(cfg, sts.get_caller_identity()["Account"]), cfg.model_store.prefix


def test_cli_publishes_to_the_stack_bucket(
    s3: Any, sts: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, prefix = dev_store(sts)
    s3.create_bucket(Bucket=bucket)
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model)]

    assert publish_model.main(argv, s3=s3, sts=sts) == 0

    out, err = capsys.readouterr()
    assert keys(s3, bucket) == sorted(
        [f"{version_prefix(prefix, 'resnet', 3)}{rel}" for rel in FILES]
        + [marker_key(prefix, "resnet", 3)]
    )
    assert keys(s3, BUCKET) == []
    assert f"published resnet version 3: 5 files, {TOTAL_BYTES} B in s3://{bucket}/" in out
    assert err.rstrip().endswith(f"100%  {TOTAL_BYTES} B of {TOTAL_BYTES} B")


def test_cli_refuses_a_published_version_unless_forced(
    s3: Any, sts: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, prefix = dev_store(sts)
    s3.create_bucket(Bucket=bucket)
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model)]
    assert publish_model.main(argv, s3=s3, sts=sts) == 0
    capsys.readouterr()

    assert publish_model.main(argv, s3=s3, sts=sts) == 1
    assert "already published" in capsys.readouterr().err
    assert publish_model.main([*argv, "--force"], s3=s3, sts=sts) == 0
    assert "replacing 6 object(s)" in capsys.readouterr().out


def test_cli_reports_an_invalid_model_and_a_missing_bucket_with_status_1(
    s3: Any, sts: Any, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path"]

    assert publish_model.main([*base, str(empty)], s3=s3, sts=sts) == 1
    assert f"{empty} is empty" in capsys.readouterr().err
    assert publish_model.main([*base, str(model)], s3=s3, sts=sts) == 1  # bucket not created
    err = capsys.readouterr().err
    assert f"error: bucket {dev_store(sts)[0]} does not exist (publishing resnet version 3)" in err
    assert "NoSuchBucket" in err


def test_cli_lists_versions(
    s3: Any, sts: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, prefix = dev_store(sts)
    s3.create_bucket(Bucket=bucket)
    publish(s3, bucket, prefix, "resnet", 1, model)
    key = f"{version_prefix(prefix, 'resnet', 2)}saved_model.pb"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 2048)
    argv = ["--stack", "dev", "--model", "resnet", "--list"]

    assert publish_model.main(argv, s3=s3, sts=sts) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["version", "complete", "files", "size"],
        ["1", "yes", "5", str(TOTAL_BYTES)],
        ["2", "no", "1", "2.0"],
    ]
    assert lines[2].endswith("2.0 KiB  no completion marker (upload running or interrupted)")


def test_cli_bucket_and_prefix_flags_override_the_stack(
    s3: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model),
            "--bucket", BUCKET, "--prefix", "team/models"]

    assert publish_model.main(argv, s3=s3, sts=NoClient()) == 0

    assert marker_key("team/models", "resnet", 3) in keys(s3)
    assert len(keys(s3, prefix="team/models/resnet/3/")) == 5


@pytest.mark.parametrize("name", ["ResNet", "-resnet", "res_net", "resnet-"])
def test_cli_bad_model_name_exits_2(
    name: str, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--stack", "dev", f"--model={name}", "--version", "3", "--path", str(model)]

    assert publish_model.main(argv, s3=NoClient(), sts=NoClient()) == 2
    assert f"model name {name!r} is not allowed" in capsys.readouterr().err


def test_cli_config_error_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n"
        "  aws:region: us-east-1\n"
        "  tf-serving-eks:environment: dev\n"
        "  tf-serving-eks:cluster: {name: tfs-broken}\n"
        "  tf-serving-eks:model_store: {prefix: /models}\n"
    )
    monkeypatch.setattr(publish_model, "stack_file", lambda s: tmp_path / f"Pulumi.{s}.yaml")

    assert publish_model.main(["--stack", "broken", "--model", "resnet", "--list"],
                              s3=NoClient(), sts=NoClient()) == 2
    err = capsys.readouterr().err
    assert "stack 'broken'" in err and "tf-serving-eks:model_store.prefix" in err
    assert publish_model.main(["--stack", "nope", "--model", "resnet", "--list"],
                              s3=NoClient(), sts=NoClient()) == 2
    assert "no stack file Pulumi.nope.yaml" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(model: Path) -> None:
    for argv in (
        ["--stack", "dev", "--model", "resnet", "--version", "3"],
        ["--stack", "dev", "--model", "resnet", "--list", "--force"],
        ["--stack", "dev", "--model", "resnet"],
    ):
        with pytest.raises(SystemExit) as exited:
            publish_model.main(argv, s3=NoClient(), sts=NoClient())
        assert exited.value.code == 2, argv


# --- where the bucket comes from --------------------------------------------------------

REAL_STACK_OUTPUTS = stack_store.pulumi_stack_outputs  # before no_deployed_stack stubs it


def test_cli_takes_the_bucket_and_prefix_from_the_deployed_stack(
    s3: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def outputs(stack: str) -> dict[str, Any]:
        asked.append(stack)
        return {"model_bucket": BUCKET, "model_prefix": "team/models", "vpc_id": "vpc-1"}

    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model)]

    assert publish_model.main(argv, s3=s3, sts=NoClient(), stack_outputs=outputs) == 0

    assert asked == ["dev"]
    assert marker_key("team/models", "resnet", 3) in keys(s3)
    assert f"bucket from stack outputs: {BUCKET}" in capsys.readouterr().err
    assert publish_model.main(
        [*argv[:4], "--list", "--prefix", "elsewhere"], s3=s3, sts=NoClient(), stack_outputs=outputs
    ) == 0
    assert "no versions of resnet under s3://models-test-bucket/elsewhere/" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "outputs", [None, {}, {"model_bucket": ""}], ids=["not-deployed", "no-outputs", "empty"]
)
def test_cli_derives_the_bucket_without_stack_outputs(
    s3: Any, sts: Any, model: Path, capsys: pytest.CaptureFixture[str],
    outputs: dict[str, Any] | None,
) -> None:
    bucket, prefix = dev_store(sts)
    s3.create_bucket(Bucket=bucket)
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model)]

    assert publish_model.main(argv, s3=s3, sts=sts, stack_outputs=lambda stack: outputs) == 0

    assert marker_key(prefix, "resnet", 3) in keys(s3, bucket)
    account = sts.get_caller_identity()["Account"]
    assert (
        f"bucket derived from Pulumi.dev.yaml and account {account}: {bucket}"
        in capsys.readouterr().err
    )


def test_stack_outputs_are_none_without_the_pulumi_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    assert REAL_STACK_OUTPUTS("dev") is None


@pytest.mark.skipif(shutil.which("bash") is None, reason="the fake pulumi is a bash script")
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("""echo '{"model_bucket": "b-1", "model_prefix": "m"}'""",
         {"model_bucket": "b-1", "model_prefix": "m"}),
        ("echo 'error: no stack named dev found' >&2; exit 255", None),
        ("echo 'not json'", None),
        ("echo '[]'", None),
    ],
    ids=["deployed", "no-stack", "bad-json", "not-an-object"],
)
def test_stack_outputs_come_from_the_pulumi_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str,
    expected: dict[str, Any] | None,
) -> None:
    called = tmp_path / "called"
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    fake.write_text(f'#!{shutil.which("bash")}\necho "$PWD $*" > "{called}"\n{script}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")

    assert REAL_STACK_OUTPUTS("dev") == expected
    assert called.read_text() == f"{ROOT} stack output --json --stack dev\n"


# --- S3 refusing the credentials ---------------------------------------------------------


@pytest.mark.parametrize(
    ("denied", "operation"), [("list", "ListObjectsV2"), ("put", "PutObject")]
)
def test_cli_publish_access_denied_is_one_line_and_status_1(
    s3: Any, model: Path, capsys: pytest.CaptureFixture[str], denied: str, operation: str
) -> None:
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model),
            "--bucket", BUCKET]

    assert publish_model.main(argv, s3=DeniedS3(s3, denied), sts=NoClient()) == 1

    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: access denied to s3://{BUCKET}/models/resnet/3/ (publishing resnet version 3): "
        f"AccessDenied: Access Denied [{operation}]"
    )
    assert marker_key(PREFIX, "resnet", 3) not in keys(s3)


def test_cli_list_access_denied_is_one_line_and_status_1(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--stack", "dev", "--model", "resnet", "--list", "--bucket", BUCKET]

    assert publish_model.main(argv, s3=DeniedS3(s3, "list"), sts=NoClient()) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: access denied to s3://{BUCKET}/models/resnet/ (listing resnet): "
        "AccessDenied: Access Denied [ListObjectsV2]\n"
    )


def test_cli_upload_denied_inside_boto3s_transfer_manager(
    s3: Any, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real upload_file wraps S3's refusal in S3UploadFailedError; it reads the same."""

    def deny(**kwargs: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "AccessDenied", "Message": "Access Denied"}
        return AWSResponse("https://s3.amazonaws.com/", 403, {}, None), {"Error": error}

    s3.meta.events.register("before-call.s3.PutObject", deny)
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model),
            "--bucket", BUCKET]

    assert publish_model.main(argv, s3=s3, sts=NoClient()) == 1

    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: access denied to s3://{BUCKET}/models/resnet/3/ (publishing resnet version 3): "
        "AccessDenied: Access Denied [PutObject]"
    )
    s3.meta.events.unregister("before-call.s3.PutObject", deny)
    assert keys(s3) == []


# --- warm-up requests -------------------------------------------------------------------

SIGNATURES: Mapping[str, Signature] = {"serving_default": {"image": ("DT_FLOAT", [-1, 2])}}
WARMUP_KEY = f"models/resnet/3/{WARMUP_FILE}"


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A version whose saved_model.pb has a serving signature, and no warm-up file."""
    return write_version(tmp_path / "export" / "3", SIGNATURES)


def warmup_examples(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "warmup.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_the_warmup_file_is_uploaded_inside_the_version_before_the_marker(
    s3: Any, served: Path, tmp_path: Path
) -> None:
    before = sorted(p.relative_to(served).as_posix() for p in served.rglob("*"))
    warmup = warmup_file(
        warmup_examples(tmp_path, '{"instances": [[1, 2], [3, 4]]}'), served, "resnet"
    )
    recording = RecordingS3(s3)

    result = publish(recording, BUCKET, PREFIX, "resnet", 3, served, warmup=warmup)

    written = [key for key, _ in recording.writes]
    marker = marker_key(PREFIX, "resnet", 3)
    assert written[-1] == marker and WARMUP_KEY in written[:-1]
    assert sorted(written) == keys(s3)
    assert all(algorithm == "SHA256" for _, algorithm in recording.writes)
    assert read(s3, WARMUP_KEY) == warmup
    listed = {rel: read(s3, f"models/resnet/3/{rel}") for rel in [*model_files(served), WARMUP_FILE]}
    assert read(s3, marker).decode() == sha256sum(listed)
    assert version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)
    assert (result.files, result.bytes) == (len(listed), sum(map(len, listed.values())))
    # What the sync will put on disk is what TF Serving reads: one predict request of 2 x 2.
    [record] = records(read(s3, WARMUP_KEY))
    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
    assert [d.size for d in request.inputs["image"].tensor_shape.dim] == [2, 2]
    assert sorted(p.relative_to(served).as_posix() for p in served.rglob("*")) == before, (
        "the local version directory is left as it was"
    )


def test_a_version_with_its_own_warmup_file_is_refused_unless_replacing(
    s3: Any, tmp_path: Path
) -> None:
    own = b"its own warm-up records"
    version = write_version(tmp_path / "3", SIGNATURES, extra={WARMUP_FILE: own})
    warmup = warmup_file(warmup_examples(tmp_path, '{"inputs": [[1, 2]]}'), version, "resnet")

    with pytest.raises(PublishError, match=f"{version / WARMUP_FILE} exists.*--replace-warmup"):
        publish(NoClient(), BUCKET, PREFIX, "resnet", 3, version, warmup=warmup)

    publish(s3, BUCKET, PREFIX, "resnet", 3, version, warmup=warmup, replace_warmup=True)
    assert read(s3, WARMUP_KEY) == warmup
    assert (version / WARMUP_FILE).read_bytes() == own


def test_without_examples_the_versions_own_warmup_file_is_published_as_it_is(
    s3: Any, model: Path
) -> None:
    publish(s3, BUCKET, PREFIX, "resnet", 3, model)
    assert read(s3, WARMUP_KEY) == FILES[WARMUP_FILE]


def test_cli_publishes_the_warmup_requests(
    s3: Any, served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = warmup_examples(tmp_path, '{"inputs": [[1, 2]]}', "", '{"instances": [[5, 6]]}')
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(served),
            "--bucket", BUCKET, "--warmup-examples", str(examples)]

    assert publish_model.main(argv, s3=s3, sts=NoClient()) == 0

    assert f"warm-up requests from {examples}" in capsys.readouterr().out
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records(read(s3, WARMUP_KEY))]
    assert [list(log.predict_log.request.inputs["image"].float_val) for log in logs] == [
        [1.0, 2.0], [5.0, 6.0]
    ]
    assert version_is_complete(s3, BUCKET, PREFIX, "resnet", 3)


def test_cli_refuses_bad_examples_before_any_aws_call(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = warmup_examples(tmp_path, '{"inputs": [[1, 2]]}', '{"inputs": {"images": [[1, 2]]}}')
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(served),
            "--warmup-examples", str(examples)]

    assert publish_model.main(argv, s3=NoClient(), sts=NoClient()) == 1

    err = capsys.readouterr().err
    assert err.startswith("error: stack 'dev', resnet version 3: --warmup-examples ")
    assert (
        f"{examples} line 2: input 'images' (\"inputs\") is not an input of the signature "
        "(inputs: image)"
    ) in err
    assert "Traceback" not in err


def test_cli_refuses_to_replace_a_versions_warmup_file_unasked(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "saved_model.pb").write_bytes(saved_model([(["serve"], SIGNATURES)]))
    examples = warmup_examples(tmp_path, '{"inputs": [[1, 2]]}')
    argv = ["--stack", "dev", "--model", "resnet", "--version", "3", "--path", str(model),
            "--warmup-examples", str(examples)]

    assert publish_model.main(argv, s3=NoClient(), sts=NoClient()) == 1
    assert f"{model / WARMUP_FILE} exists" in capsys.readouterr().err


def test_cli_warmup_usage_errors_exit_2(served: Path, tmp_path: Path) -> None:
    base = ["--stack", "dev", "--model", "resnet"]
    for argv in (
        [*base, "--version", "3", "--path", str(served), "--replace-warmup"],
        [*base, "--list", "--warmup-examples", str(tmp_path / "w.jsonl")],
    ):
        with pytest.raises(SystemExit) as exited:
            publish_model.main(argv, s3=NoClient(), sts=NoClient())
        assert exited.value.code == 2, argv
