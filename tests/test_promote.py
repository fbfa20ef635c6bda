"""Promoting model versions between stacks and moving canaries (tools/promote/): the
stack file edited in place, every refusal, and round trips, against moto's S3 and STS.

The repo's stack files are copied into a temporary root. The tests take prod's `resnet`
as written there (policy specific, a `stable` label) and dev's as `latest`, so dev's
version comes from its model store; `STABLE` and `NEW` are read from the files."""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components.config import PROJECT, StackConfig
from components.model_layout import model_bucket_name, version_prefix
from tools.lib.model_repository import publish
from tools.lib.stackfile import ROOT, load_stack_file, read_settings
from tools.promote import __main__ as promote
from tools.promote.__main__ import main
from tools.promote.errors import Refused
from tools.promote.plan import read_config, write_atomically
from tests.support.aws import fake_credentials, no_deployed_stack  # noqa: F401 (autouse)

MODEL = "resnet"
SERVING = f"{PROJECT}:serving"
# prod's resnet as the program reads it.
PROD_RESNET = load_stack_file("prod").serving.models[MODEL]
STABLE: int = PROD_RESNET.labels["stable"]
NEW = max(PROD_RESNET.versions) + 1  # the version dev has and prod canaries
FILES = {
    "saved_model.pb": b"graph-def",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"weights",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    for path in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(path, folder / path.name)
    dev = read_config(folder / "Pulumi.dev.yaml", "dev")
    policy = dev.serving.models[MODEL].version_policy
    assert policy == "latest", "these tests assume dev's resnet uses version_policy latest"
    return folder


class Stores:
    """Each stack's model bucket in moto, named as the stack derives it, and publishing."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.account = boto3.client("sts", region_name="us-east-1").get_caller_identity()["Account"]
        self.tmp = tmp
        self.configs: dict[str, StackConfig] = {}
        for path in sorted(root.glob("Pulumi.*.yaml")):
            stack = path.name.split(".")[1]
            cfg = read_config(path, stack)
            self.configs[stack] = cfg
            extra = (
                {}
                if cfg.aws_region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": cfg.aws_region}}
            )
            self.s3.create_bucket(Bucket=self.bucket(stack), **extra)

    def bucket(self, stack: str) -> str:
        return model_bucket_name(self.configs[stack], self.account)

    def prefix(self, stack: str) -> str:
        return self.configs[stack].model_store.prefix

    def publish(self, stack: str, version: int, model: str = MODEL) -> None:
        folder = self.tmp / f"export-{stack}-{model}-{version}"
        for relative, data in FILES.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
        publish(self.s3, self.bucket(stack), self.prefix(stack), model, version, folder)

    def upload_without_marker(self, stack: str, version: int, model: str = MODEL) -> None:
        key = version_prefix(self.prefix(stack), model, version) + "saved_model.pb"
        self.s3.put_object(Bucket=self.bucket(stack), Key=key, Body=b"graph-def")


@pytest.fixture
def stores(root: Path, tmp_path: Path) -> Iterator[Stores]:
    with mock_aws():
        yield Stores(root, tmp_path)


@pytest.fixture
def published(stores: Stores) -> Stores:
    """dev has STABLE and NEW (and a half-uploaded NEW + 1); prod has both complete."""
    for version in (STABLE, NEW):
        stores.publish("dev", version)
        stores.publish("prod", version)
    stores.upload_without_marker("dev", NEW + 1)
    return stores


def run(root: Path, stores: Stores, *argv: str, **kwargs: Any) -> int:
    kwargs.setdefault("s3", stores.s3)
    kwargs.setdefault("stack_outputs", lambda stack: None)
    return main([*argv, "--root", str(root)], **kwargs)


def prod_text(root: Path) -> str:
    return (root / "Pulumi.prod.yaml").read_text()


def config_as_read(root: Path, stack: str) -> StackConfig:
    """The stack file read the way the Pulumi program reads it."""
    return read_config(root / f"Pulumi.{stack}.yaml", stack)


def split_block(text: str, model: str) -> tuple[list[str], list[str], list[str]]:
    """Lines before the model's block under `models:`, the block, and the lines after it."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if re.fullmatch(rf" +{model}:\n", line))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return lines[:start], lines[start:end], lines[end:]


def refused(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert "\nrefused: " in "\n" + err, err
    for word in words:
        assert word in err, err
    return err


# --- promoting from dev to prod ------------------------------------------------------


def test_dry_run_prints_the_diff_and_a_summary_and_writes_nothing(
    root: Path, published: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    before = prod_text(root)
    # No injected clients: the tool makes its own (moto answers), as it does for real.
    assert main(["--from", "dev", "--to", "prod", "--model", MODEL, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "--- a/Pulumi.prod.yaml\n+++ b/Pulumi.prod.yaml\n" in out
    assert f"+        canary: {{version: {NEW}, weight: 10}}\n" in out
    assert f"resnet: dev serves version {NEW} (Pulumi.dev.yaml: latest" in out
    assert f"resnet: canary of version {NEW} at 10% of traffic (stable stays {STABLE})" in out
    assert "dry run: Pulumi.prod.yaml not written; add --apply" in out
    assert prod_text(root) == before


def test_apply_wires_the_canary_the_program_reads(root: Path, published: Stores) -> None:
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL,
               "--weight", "25", "--apply") == 0
    model = config_as_read(root, "prod").serving.models[MODEL]
    assert model.canary is not None
    assert (model.canary.version, model.canary.weight) == (NEW, 25)
    assert model.versions == [STABLE]
    assert model.labels == {"stable": STABLE}
    _, block, _ = split_block(prod_text(root), MODEL)
    assert block[-1] == f"        canary: {{version: {NEW}, weight: 25}}\n"


def test_apply_changes_nothing_outside_the_model_block(root: Path, published: Stores) -> None:
    path = root / "Pulumi.prod.yaml"
    # A comment right after the model block must stay right before the next key.
    path.write_text(prod_text(root).replace(
        f"\n  {PROJECT}:ingress:", f"\n  # Public endpoints.\n  {PROJECT}:ingress:"
    ))
    before = prod_text(root)
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    after = prod_text(root)
    head_before, block_before, tail_before = split_block(before, MODEL)
    head_after, block_after, tail_after = split_block(after, MODEL)
    assert head_after == head_before
    assert tail_after == tail_before
    assert block_after == [*block_before, f"        canary: {{version: {NEW}, weight: 10}}\n"]
    assert after.startswith("# Production: ")
    assert f"  # Public endpoints.\n  {PROJECT}:ingress:\n" in after
    assert "  # Placeholders: replace each with your own" in after
    assert "\n        slack_channel: \"#ml-platform-alerts\"\n" in after  # quoting kept


def test_a_model_the_target_lacks_is_added_as_stable(
    root: Path, published: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    published.publish("dev", 2, "half-plus-two")
    published.publish("prod", 2, "half-plus-two")
    assert run(root, published, "--from", "dev", "--to", "prod", "--apply") == 0
    out = capsys.readouterr().out
    assert "half-plus-two: added, serving version 2 as stable" in out
    models = config_as_read(root, "prod").serving.models
    added = models["half-plus-two"]
    assert (added.version_policy, added.versions, added.labels, added.canary) == (
        "specific", [2], {"stable": 2}, None
    )
    canary = models[MODEL].canary
    assert canary is not None and canary.version == NEW


def test_a_version_the_target_serves_is_nothing_to_do(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.publish("dev", STABLE)
    before = prod_text(root)
    assert run(root, stores, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    out = capsys.readouterr().out
    assert f"resnet: prod already serves version {STABLE}; nothing to do" in out
    assert "Pulumi.prod.yaml: nothing to change" in out
    assert "---" not in out
    assert prod_text(root) == before


def test_the_weight_of_a_running_canary_can_be_changed(root: Path, published: Stores) -> None:
    argv = ["--from", "dev", "--to", "prod", "--model", MODEL, "--apply"]
    assert run(root, published, *argv) == 0
    assert run(root, published, *argv, "--weight", "50") == 0
    canary = config_as_read(root, "prod").serving.models[MODEL].canary
    assert canary is not None and (canary.version, canary.weight) == (NEW, 50)


def test_the_source_image_version_is_carried(
    root: Path, published: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = root / "Pulumi.dev.yaml"
    current = config_as_read(root, "dev").serving.image_version
    dev.write_text(dev.read_text().replace(f"image_version: {current}", "image_version: 2.99.0"))
    before = prod_text(root)
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    assert f"serving.image_version: {current} -> 2.99.0 (from dev)" in capsys.readouterr().out
    assert config_as_read(root, "prod").serving.image_version == "2.99.0"
    changed = [
        (a, b) for a, b in zip(before.splitlines(), prod_text(root).splitlines()) if a != b
    ]
    assert changed[0] == (f"    image_version: {current}", "    image_version: 2.99.0")


@pytest.mark.parametrize(
    ("labels", "expected"), [("{stable: 4}", 4), ("{previous: 4}", 5)], ids=["stable", "highest"]
)
def test_a_specific_source_gives_its_stable_label_else_its_highest_version(
    root: Path, stores: Stores, labels: str, expected: int
) -> None:
    staging = prod_text(root).replace("environment: prod", "environment: staging").replace(
        "name: tfs-prod", "name: tfs-staging"
    )
    head, block, tail = split_block(staging, MODEL)
    block = [
        "      resnet:\n",
        "        version_policy: specific\n",
        "        versions: [4, 5]\n",
        f"        labels: {labels}\n",
    ]
    (root / "Pulumi.staging.yaml").write_text("".join(head + block + tail))
    (root / "Pulumi.prod.yaml").write_text(
        prod_text(root).replace(f"versions: [{STABLE}]", "versions: [1]").replace(
            f"stable: {STABLE}", "stable: 1"
        )
    )
    stores.publish("prod", expected)
    assert run(root, stores, "--from", "staging", "--to", "prod", "--model", MODEL, "--apply") == 0
    canary = config_as_read(root, "prod").serving.models[MODEL].canary
    assert canary is not None and canary.version == expected


def test_deployed_source_versions_are_shown_when_the_pulumi_cli_has_them(
    root: Path, published: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def outputs(stack: str) -> dict[str, Any] | None:
        asked.append(stack)
        return {"serving_model_versions": {MODEL: [STABLE, NEW]}} if stack == "dev" else None

    argv = ("--from", "dev", "--to", "prod", "--model", MODEL)
    assert run(root, published, *argv, stack_outputs=outputs) == 0
    out = capsys.readouterr().out
    assert f"resnet: deployed dev stack exports serving_model_versions = [{STABLE}, {NEW}]" in out
    assert asked.count("dev") == 1  # one lookup serves the bucket and the display
    # Without the CLI (no outputs), nothing is said about it.
    assert run(root, published, *argv) == 0
    assert "serving_model_versions" not in capsys.readouterr().out


# --- refusals -----------------------------------------------------------------------


def test_refuses_a_version_missing_from_the_target_store(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.publish("dev", NEW)
    before = prod_text(root)
    assert run(root, stores, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 1
    refused(
        capsys,
        "refused: Pulumi.prod.yaml: model 'resnet':",
        f"version {NEW} is not in prod's model store (s3://{stores.bucket('prod')}/",
        f"tools.publish_model --stack prod --model resnet --version {NEW}",
    )
    assert prod_text(root) == before


@pytest.mark.parametrize("how", ["no marker", "file deleted"])
def test_refuses_a_version_incomplete_in_the_target_store(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    stores.publish("dev", NEW)
    if how == "no marker":
        stores.upload_without_marker("prod", NEW)
        reason = "no completion marker"
    else:
        stores.publish("prod", NEW)
        key = version_prefix(stores.prefix("prod"), MODEL, NEW) + "variables/variables.index"
        stores.s3.delete_object(Bucket=stores.bucket("prod"), Key=key)
        reason = "completion marker is malformed or lists files that are missing"
    before = prod_text(root)
    assert run(root, stores, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 1
    refused(capsys, "Pulumi.prod.yaml: model 'resnet'", f"version {NEW} is incomplete", reason)
    assert prod_text(root) == before


def test_refuses_to_canary_a_target_model_on_latest(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (root / "Pulumi.dev.yaml").read_text()
    assert run(root, stores, "--from", "prod", "--to", "dev", "--model", MODEL, "--apply") == 1
    refused(
        capsys, "refused: Pulumi.dev.yaml: model 'resnet'", "version_policy latest: cannot canary"
    )
    assert (root / "Pulumi.dev.yaml").read_text() == before


def test_refuses_while_a_canary_of_another_version_is_in_progress(
    root: Path, published: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--from", "dev", "--to", "prod", "--model", MODEL, "--apply")
    assert run(root, published, *argv) == 0
    published.publish("dev", NEW + 2)
    published.publish("prod", NEW + 2)
    before = prod_text(root)
    assert run(root, published, *argv) == 1
    refused(
        capsys,
        "refused: Pulumi.prod.yaml: model 'resnet'",
        f"a canary of version {NEW} is in progress (10% of traffic)",
        "--promote-canary or --rollback",
    )
    assert prod_text(root) == before


@pytest.mark.parametrize(
    ("replacement", "shown"),
    [("best: {v}", "missing"), ("stable: 7", "7, not in versions")],
    ids=["stable label missing", "stable outside versions"],
)
def test_refuses_a_hand_edited_stable_label(
    root: Path,
    published: Stores,
    capsys: pytest.CaptureFixture[str],
    replacement: str,
    shown: str,
) -> None:
    path = root / "Pulumi.prod.yaml"
    path.write_text(prod_text(root).replace(
        f"          stable: {STABLE}\n", f"          {replacement.format(v=STABLE)}\n"
    ))
    before = prod_text(root)
    for argv in (
        ("--from", "dev", "--to", "prod", "--model", MODEL, "--apply"),
        ("--stack", "prod", "--model", MODEL, "--promote-canary", "--apply"),
    ):
        if argv[0] == "--from" and shown.endswith("not in versions"):
            # An invalid target stack file is a configuration error (status 2), reported
            # before the source's model store is read.
            assert run(root, published, *argv) == 2
            err = capsys.readouterr().err
            assert "tf-serving-eks:serving.models.resnet.labels.stable" in err
            assert prod_text(root) == before
        else:
            assert run(root, published, *argv) == 1
            refused(
                capsys,
                "refused: Pulumi.prod.yaml: model 'resnet'",
                f"`stable` label is {shown}",
                "changed by hand in a way the tool cannot merge",
            )
        assert prod_text(root) == before
        if argv[0] == "--from":  # put a canary in by hand for the second command
            path.write_text(before.replace(
                "      resnet:\n", f"      resnet:\n        canary: {{version: {NEW}}}\n"
            ))
            before = prod_text(root)


def test_refuses_a_result_the_config_model_rejects(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    older = STABLE - 1  # dev's newest is older than what prod serves: not a valid canary
    assert older >= 1
    stores.publish("dev", older)
    stores.publish("prod", older)
    before = prod_text(root)
    assert run(root, stores, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 1
    refused(
        capsys,
        "refused: Pulumi.prod.yaml: the result would not be a valid stack file:",
        "stack 'prod': invalid configuration in Pulumi.prod.yaml:",
        f"{PROJECT}:serving.models.resnet.canary.version: must be newer than the served",
    )
    assert prod_text(root) == before


def test_refuses_a_latest_source_without_a_complete_version(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    stores.upload_without_marker("dev", NEW)
    assert run(root, stores, "--from", "dev", "--to", "prod", "--model", MODEL) == 1
    refused(capsys, "refused: Pulumi.dev.yaml: model 'resnet': no complete version in s3://")


# --- canary: promote, roll back, finish -----------------------------------------------


@pytest.fixture
def canary(root: Path, published: Stores) -> str:
    """prod with a canary of NEW applied; returns prod's original text."""
    original = prod_text(root)
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    return original


def test_promote_canary_makes_it_stable_and_keeps_the_old_one_loaded(
    root: Path, published: Stores, canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ("--stack", "prod", "--model", MODEL, "--promote-canary")
    with_canary = prod_text(root)
    assert run(root, published, *argv) == 0
    out = capsys.readouterr().out
    assert f"-        versions: [{STABLE}]\n+        versions: [{STABLE}, {NEW}]\n" in out
    assert f"resnet: stable {STABLE} -> {NEW}; {STABLE} stays loaded as `previous`" in out
    assert prod_text(root) == with_canary  # dry run
    assert run(root, published, *argv, "--apply") == 0
    model = config_as_read(root, "prod").serving.models[MODEL]
    assert model.versions == [STABLE, NEW]
    assert model.labels == {"stable": NEW, "previous": STABLE}
    assert model.canary is None


def test_promote_canary_refuses_without_a_canary(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(root, stores, "--stack", "prod", "--model", MODEL, "--promote-canary") == 1
    refused(capsys, "refused: Pulumi.prod.yaml: model 'resnet': has no canary in progress")


def test_rollback_of_a_canary_removes_it(
    root: Path, published: Stores, canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--rollback", "--apply") == 0
    assert f"resnet: canary of version {NEW} (10%) removed; stable {STABLE} takes all" in (
        capsys.readouterr().out
    )
    assert prod_text(root) == canary


def test_rollback_after_a_promotion_returns_to_previous(root: Path, published: Stores) -> None:
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--rollback") == 1
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--promote-canary",
               "--apply") == 0
    path = root / "Pulumi.prod.yaml"
    # Labels added by hand: one on the previous version (kept), one on the new (dropped).
    path.write_text(prod_text(root).replace(
        f"          previous: {STABLE}\n",
        f"          previous: {STABLE}\n          blessed: {STABLE}\n          newest: {NEW}\n",
    ))
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--rollback", "--apply") == 0
    model = config_as_read(root, "prod").serving.models[MODEL]
    assert model.versions == [STABLE]
    assert model.labels == {"stable": STABLE, "blessed": STABLE}
    assert model.canary is None


def test_rollback_refuses_with_nothing_to_roll_back(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    before = prod_text(root)
    assert run(root, stores, "--stack", "prod", "--model", MODEL, "--rollback", "--apply") == 1
    refused(capsys, "refused: Pulumi.prod.yaml: model 'resnet': nothing to roll back")
    assert prod_text(root) == before


def test_finish_unloads_the_previous_version(
    root: Path, published: Stores, canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--promote-canary",
               "--apply") == 0
    capsys.readouterr()
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--finish", "--apply") == 0
    assert f"resnet: version {STABLE} (previous) unloaded; serving [{NEW}]" in (
        capsys.readouterr().out
    )
    model = config_as_read(root, "prod").serving.models[MODEL]
    assert (model.versions, model.labels, model.canary) == ([NEW], {"stable": NEW}, None)
    # Nothing left to finish, and no way back.
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--finish") == 1
    refused(capsys, "no `previous` label: no promotion to finish")
    assert run(root, published, "--stack", "prod", "--model", MODEL, "--rollback") == 1


@pytest.mark.parametrize("comment", [False, True], ids=["repo file", "comment after block"])
def test_promote_then_rollback_restores_the_original_bytes(
    root: Path, published: Stores, comment: bool
) -> None:
    path = root / "Pulumi.prod.yaml"
    if comment:
        path.write_text(prod_text(root).replace(
            f"\n  {PROJECT}:ingress:", f"\n  # Public endpoints.\n  {PROJECT}:ingress:"
        ))
    original = path.read_bytes()
    steps = [
        ("--from", "dev", "--to", "prod", "--model", MODEL),
        ("--stack", "prod", "--model", MODEL, "--promote-canary"),
        ("--stack", "prod", "--model", MODEL, "--rollback"),
    ]
    texts = []
    for step in steps:
        assert run(root, published, *step, "--apply") == 0
        texts.append(path.read_bytes())
    assert len(set(texts[:2])) == 2 and original not in texts[:2]
    assert path.read_bytes() == original


# --- files and usage --------------------------------------------------------------------


def test_apply_replaces_the_file_atomically(root: Path, published: Stores) -> None:
    path = root / "Pulumi.prod.yaml"
    path.chmod(0o640)
    names = sorted(os.listdir(root))
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    assert sorted(os.listdir(root)) == names  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(Refused, match="changed while this ran"):
        write_atomically(path, "config: {}\n", expected="something else")
    assert sorted(os.listdir(root)) == names


def test_the_written_file_is_what_the_program_reads(root: Path, published: Stores) -> None:
    original, _ = read_settings(root / "Pulumi.prod.yaml")
    assert run(root, published, "--from", "dev", "--to", "prod", "--model", MODEL, "--apply") == 0
    settings, secret_keys = read_settings(root / "Pulumi.prod.yaml")
    assert f"{PROJECT}:alerting_secrets" in secret_keys  # still encrypted values, untouched
    assert {k for k, v in settings.items() if original.get(k) != v} == {SERVING}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--from", "dev"],
        ["--from", "dev", "--to", "dev"],
        ["--from", "dev", "--to", "prod", "--rollback"],
        ["--from", "dev", "--to", "prod", "--weight", "101"],
        ["--from", "dev", "--to", "prod", "--model", "nope"],
        ["--from", "dev", "--to", "prod", "--model", "Bad_Name"],
        ["--from", "../dev", "--to", "prod"],
        ["--from", "dev", "--to", "missing"],
        ["--stack", "prod", "--rollback"],
        ["--stack", "prod", "--model", MODEL],
        ["--stack", "prod", "--model", MODEL, "--rollback", "--finish"],
        ["--stack", "prod", "--model", MODEL, "--rollback", "--weight", "5"],
        ["--stack", "prod", "--model", "nope", "--rollback"],
    ],
    ids=lambda argv: " ".join(argv) or "nothing",
)
def test_usage_errors_exit_2(
    root: Path, stores: Stores, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    assert run(root, stores, *argv) == 2
    assert capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before


def test_an_invalid_source_stack_file_exits_2(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = root / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text().replace("latest_count: 2", "latest_cont: 2"))
    assert run(root, stores, "--from", "dev", "--to", "prod") == 2
    assert "serving.models.resnet.latest_cont: unknown key" in capsys.readouterr().err


def test_a_file_that_cannot_be_kept_as_is_is_not_edited(
    root: Path, stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    path = root / "Pulumi.prod.yaml"
    path.write_text(
        prod_text(root).replace("\n    scheme: internet-facing", "\n    scheme:   internet-facing")
    )
    before = prod_text(root)
    assert run(root, stores, "--stack", "prod", "--model", MODEL, "--rollback", "--apply") == 2
    assert "can't be edited without reformatting" in capsys.readouterr().err
    assert prod_text(root) == before


def test_module_docstring_lists_the_commands() -> None:
    usage = promote.__doc__ or ""
    for action in ("--from dev --to prod", "--promote-canary", "--rollback", "--finish"):
        assert action in usage
