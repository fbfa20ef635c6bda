"""Publish TF Serving SavedModel versions to the S3 model store, and inspect what is there.

A version's files are uploaded under `<prefix>/<model>/<version>/` and its completion
marker is written last (components/model_layout.py): readers treat a version without a
marker as absent, so an upload that is running or died half-way is never served.

It owns what a version is in the store and how it gets there; it must not decide which bucket
(tools/lib/stack_store.py), parse arguments or print (the commands).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from botocore.exceptions import ClientError

from components.model_layout import COMPLETE_DIR, marker_key, model_prefix, version_prefix
from tools.lib.warmup import WARMUP_FILE

# A boto3 S3 client; boto3 ships no type information, so this only documents intent.
S3Client: TypeAlias = Any

# RFC 1123 label, like the project's other names; it also keeps a model's folder from
# ever colliding with the `_complete` folder or a version number.
MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")
_DIGITS = re.compile(r"^[0-9]+$")
_MARKER_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys per request
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class PublishError(Exception):
    """Publishing was refused or failed; `problems` lists what is wrong with the model."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__("\n  - ".join([message, *self.problems]))


@dataclass(frozen=True)
class PublishResult:
    bucket: str
    version_prefix: str
    marker_key: str
    files: int
    bytes: int
    replaced: int  # objects deleted first because of `force` (marker included)


@dataclass(frozen=True)
class VersionInfo:
    version: int
    complete: bool
    files: int
    bytes: int
    problem: str | None = None


def _symlink_problem(entry: Path, root: Path) -> str | None:
    if not entry.is_symlink():
        return None
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError):
        return f"{entry} is a broken symlink"
    if not target.is_relative_to(root):
        return f"{entry} is a symlink to {target}, outside the model directory"
    if target.is_dir():
        # Only files are uploaded; following directory links could loop or duplicate.
        return f"{entry} is a symlink to a directory; copy the directory instead"
    return None


def _scan(path: Path) -> tuple[dict[str, Path], list[str]]:
    """The files under `path` by relative POSIX path (sorted), and the problems met on the way."""
    root = path.resolve()
    files: dict[str, Path] = {}
    problems: list[str] = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()  # a stable walk, so problems come out in the same order every time
        for name in dirs:
            # os.walk lists directory symlinks here and does not enter them.
            problem = _symlink_problem(Path(folder, name), root)
            if problem:
                problems.append(problem)
        for name in sorted(names):
            entry = Path(folder, name)
            problem = _symlink_problem(entry, root)
            if problem is None and not entry.is_file():
                problem = f"{entry} is not a regular file"
            relative = entry.relative_to(path).as_posix()
            # sha256sum would escape these in the marker and the sync's parsing would not.
            if problem is None and ("\n" in relative or "\\" in relative):
                problem = f"{entry}: file names with a newline or backslash are not supported"
            if problem:
                problems.append(problem)
            else:
                files[relative] = entry
    return dict(sorted(files.items())), problems


def _shard_name(index: int, total: int) -> str:
    return f"variables.data-{index:05d}-of-{total:05d}"


def _variables_problems(folder: Path, names: set[str]) -> list[str]:
    problems: list[str] = []
    if "variables.index" not in names:
        problems.append(
            f"{folder / 'variables.index'} is missing; the data shards can't be read without it"
        )
    shards = [(int(m[1]), int(m[2])) for m in map(_SHARD.fullmatch, sorted(names)) if m]
    if not shards:
        problems.append(f"{folder} has no data shard ({_shard_name(0, 1)}, ...)")
        return problems
    totals = sorted({total for _, total in shards})
    if len(totals) > 1:
        counts = ", ".join(f"of-{t:05d}" for t in totals)
        problems.append(f"{folder}: data shards from different saves ({counts})")
        return problems
    total = totals[0]
    present = {index for index, _ in shards}
    problems += [
        f"{folder / _shard_name(i, total)} is missing" for i in range(total) if i not in present
    ]
    problems += [
        f"{folder / _shard_name(i, total)} is out of range for {total} shard(s)"
        for i in sorted(present)
        if i >= total
    ]
    return problems


def validate_saved_model(path: Path, version: int) -> list[str]:
    """What is wrong with a local SavedModel version directory (file names only); [] if fine."""
    problems: list[str] = []
    if version < 1:
        problems.append(
            f"version {version} is not a positive integer; versions are folders named 1, 2, ..."
        )
    if not path.is_dir():
        return [*problems, f"{path} is not a directory"]
    files, found = _scan(path)
    problems += found
    if not files:
        return [*problems, f"{path} is empty; expected a SavedModel (saved_model.pb, variables/)"]
    if "saved_model.pb" not in files and "saved_model.pbtxt" not in files:
        problems.append(f"{path / 'saved_model.pb'} is missing (and no saved_model.pbtxt either)")
    variables = path / "variables"
    if variables.is_dir() and not variables.is_symlink():
        names = {
            rel.removeprefix("variables/")
            for rel in files
            if rel.startswith("variables/") and rel.count("/") == 1
        }
        problems += _variables_problems(variables, names)
    return problems


def model_files(path: Path) -> dict[str, Path]:
    """The files of the SavedModel at `path`: relative POSIX path -> file, sorted by path."""
    return _scan(path)[0]


def warmup_conflict(path: Path) -> str | None:
    """Why generated warm-up requests can't go into the version at `path` without
    `replace_warmup`: it has its own warm-up file; None if it has none."""
    if WARMUP_FILE not in model_files(path):
        return None
    return (
        f"{path / WARMUP_FILE} exists: the version already has warm-up requests; use "
        "--replace-warmup to publish the ones from --warmup-examples instead (the local file "
        "is left as it is), or leave out --warmup-examples to publish the version's own"
    )


def upload_plan(
    path: Path, warmup: bytes | None = None, *, replace_warmup: bool = False
) -> dict[str, Path | bytes]:
    """What `publish` uploads, by relative POSIX path (sorted): the files under `path`, and
    the warm-up file given as bytes in place of any the version has."""
    files: dict[str, Path | bytes] = dict(model_files(path))
    if warmup is not None:
        if WARMUP_FILE in files and not replace_warmup:
            raise PublishError(f"{path} can't take the warm-up requests:", [str(warmup_conflict(path))])
        files[WARMUP_FILE] = warmup
    return dict(sorted(files.items()))


def plan_bytes(plan: dict[str, Path | bytes]) -> int:
    """The bytes an upload plan holds."""
    return sum(len(s) if isinstance(s, bytes) else s.stat().st_size for s in plan.values())


def _objects(s3: S3Client, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"], item["Size"]


def _not_found(exc: Any) -> bool:
    return exc.response.get("Error", {}).get("Code") in _NOT_FOUND


def _exists(s3: S3Client, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _not_found(exc):
            return False
        raise
    return True


def _delete(s3: S3Client, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start : start + _DELETE_BATCH]
        response = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        errors = response.get("Errors", [])
        if errors:
            raise PublishError(
                f"could not delete {len(errors)} object(s) from s3://{bucket}",
                [f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}" for e in errors],
            )


def _sha256(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def publish(
    s3: S3Client,
    bucket: str,
    prefix: str,
    model: str,
    version: int,
    path: Path,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    warmup: bytes | None = None,
    replace_warmup: bool = False,
) -> PublishResult:
    """Upload the SavedModel at `path` as `model` version `version`, completion marker last.

    Refuses a version that is published or half-uploaded unless `force`, which first removes
    the marker and then every object of the version. `progress` receives uploaded byte
    counts as they go (from several threads for large files). `warmup`, the bytes of a
    warm-up file (tools/lib/warmup.py), is uploaded as the version's
    `assets.extra/tf_serving_warmup_requests` with its other files, before the marker; a
    version with a warm-up file of its own is refused unless `replace_warmup`. S3 errors
    propagate.
    """
    problems = validate_saved_model(path, version)
    if not MODEL_NAME.fullmatch(model):
        problems.insert(0, f"model name {model!r} does not match {MODEL_NAME.pattern}")
    if problems:
        raise PublishError(f"{path} can't be published as {model} version {version}:", problems)
    files = upload_plan(path, warmup, replace_warmup=replace_warmup)

    folder = version_prefix(prefix, model, version)
    marker = marker_key(prefix, model, version)
    existing = [key for key, _ in _objects(s3, bucket, folder)]
    published = _exists(s3, bucket, marker)
    if published and not force:
        raise PublishError(
            f"{model} version {version} is already published (s3://{bucket}/{marker} exists); "
            "publish a new version number, or use --force to replace it"
        )
    if existing and not force:
        raise PublishError(
            f"s3://{bucket}/{folder} holds {len(existing)} object(s) but no completion marker "
            "(a half-finished upload, or one still running); use --force to replace it"
        )
    # The marker goes first so no reader trusts the version while its files change.
    if published:
        s3.delete_object(Bucket=bucket, Key=marker)
    _delete(s3, bucket, existing)

    digests: dict[str, str] = {}
    for relative, source in files.items():
        if isinstance(source, bytes):
            digests[relative] = hashlib.sha256(source).hexdigest()
            s3.upload_fileobj(
                io.BytesIO(source),
                bucket,
                folder + relative,
                ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                Callback=progress,
            )
            continue
        # Hashed separately from the upload: if the file changes in between, the sync's
        # `sha256sum -c` against the marker fails and the version never goes live.
        digests[relative] = _sha256(source)
        s3.upload_file(
            str(source),
            bucket,
            folder + relative,
            ExtraArgs={"ChecksumAlgorithm": "SHA256"},
            Callback=progress,
        )
    s3.put_object(
        Bucket=bucket,
        Key=marker,
        Body="".join(f"{digest}  {rel}\n" for rel, digest in digests.items()).encode(),
        ContentType="text/plain; charset=utf-8",
        ChecksumAlgorithm="SHA256",
    )
    return PublishResult(
        bucket=bucket,
        version_prefix=folder,
        marker_key=marker,
        files=len(files),
        bytes=plan_bytes(files),
        replaced=len(existing) + int(published),
    )


def list_versions(s3: S3Client, bucket: str, prefix: str, model: str) -> list[VersionInfo]:
    """Every numbered version of `model` in the bucket, by version; complete iff it has a
    marker and files (the marker's file list is not read: see `version_is_complete`)."""
    base = model_prefix(prefix, model)
    markers: set[int] = set()
    sizes: dict[int, list[int]] = {}
    for key, size in _objects(s3, bucket, base):
        head, _, rest = key[len(base) :].partition("/")
        if head == COMPLETE_DIR:
            stem = rest.split(".", 1)[0]
            if _DIGITS.fullmatch(stem) and key == marker_key(prefix, model, int(stem)):
                markers.add(int(stem))
        elif _DIGITS.fullmatch(head) and key.startswith(version_prefix(prefix, model, int(head))):
            sizes.setdefault(int(head), []).append(size)
    versions: list[VersionInfo] = []
    for version in sorted(markers | sizes.keys()):
        found = sizes.get(version, [])
        problem = None
        if version in markers and not found:
            problem = "completion marker but no files (deleted after publishing?)"
        elif version not in markers:
            problem = "no completion marker (upload running or interrupted)"
        versions.append(
            VersionInfo(
                version=version,
                complete=problem is None,
                files=len(found),
                bytes=sum(found),
                problem=problem,
            )
        )
    return versions


def version_is_complete(s3: S3Client, bucket: str, prefix: str, model: str, version: int) -> bool:
    """The marker exists, is well-formed, and every file it lists exists (sizes are not in it)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=marker_key(prefix, model, version))
    except ClientError as exc:
        if _not_found(exc):
            return False
        raise
    listed: list[str] = []
    for line in response["Body"].read().decode("utf-8", errors="replace").splitlines():
        match = _MARKER_LINE.fullmatch(line)
        if match is None:
            return False
        listed.append(match[2])
    folder = version_prefix(prefix, model, version)
    present = {key for key, _ in _objects(s3, bucket, folder)}
    return bool(listed) and all(folder + rel in present for rel in listed)
