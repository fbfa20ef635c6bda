"""The commands a person runs, run as that person runs them (a subprocess), with bad input.

Each must answer bad input (stack name, missing file, bad YAML, bad config, bad model path,
bad version) with one message and the exit status its `--help` documents, before any AWS
call, and never with a traceback. AWS is pointed at a closed port: had a command called it
first, it would fail there with another status (1) instead of the usage status (2).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.long_running

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the program's code: the commands read `Pulumi.<stack>.yaml` beside it, so
    the tests can write broken stack files without touching the repo's."""
    root = tmp_path_factory.mktemp("project")
    for folder in ("components", "tools"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for stack in ("dev", "prod"):
        shutil.copy(REPO / f"Pulumi.{stack}.yaml", root / f"Pulumi.{stack}.yaml")
    (root / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    model = root / "export" / "1"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"\x08\x01")
    (model / "variables" / "variables.index").write_bytes(b"x")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(b"x")
    return root


def run(project: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",  # no pulumi CLI
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@functools.cache
def documented_status(project: Path, module: str, meaning: str) -> int:
    """The exit status `--help` gives for `meaning` (e.g. 'usage or configuration error'),
    read once per command and meaning."""
    done = run(project, module, "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join((done.stdout + " " + (_docstring(project, module))).split())
    found = re.search(rf"(\d) {re.escape(meaning)}", text) or re.search(
        rf"[Ee]xits? (\d) (?:with|for) (?:the )?{re.escape(meaning)}", text
    )
    assert found, f"{module} documents no exit status for {meaning!r}"
    return int(found.group(1))


def _docstring(project: Path, module: str) -> str:
    """The docstring of what `python -m module` runs: module.py, or a package's __main__.py."""
    path = project / module.replace(".", "/")
    source = (path / "__main__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
    return source.split('"""')[1]


def _edit(project: Path, stack: str, change: Callable[[str], str]) -> str:
    name = f"bad-{abs(hash(change)) % 10_000}"
    (project / f"Pulumi.{name}.yaml").write_text(change((REPO / f"Pulumi.{stack}.yaml").read_text()))
    return name


BAD_FILES: dict[str, Callable[[str], str]] = {
    "yaml-syntax": lambda t: t.replace("  tf-serving-eks:cluster:", "  tf-serving-eks:cluster: [\n", 1),
    "tab": lambda t: t + "\tbad: 1\n",
    "repeated-key": lambda t: t + "  tf-serving-eks:environment: prod\n",
    "not-a-map": lambda t: "- just\n- a list\n",
    "bad-config": lambda t: _environment(t, " production"),
    "no-namespace": lambda t: t.replace("  tf-serving-eks:serving:", "  serving:"),
    "secure-not-secret": lambda t: _environment(t, "\n    secure: v1:AAAA"),
}


def _environment(text: str, value: str) -> str:
    changed = re.sub(r"(?m)^  tf-serving-eks:environment: \w+$", f"  tf-serving-eks:environment:{value}", text)
    assert changed != text
    return changed


def _assert_clean(done: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip(), "no message"
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


CONFIG_ERROR = {
    "tools.publish_model": "usage or configuration error",
    "tools.promote": "usage or configuration error",
    "tools.preview": "config error",
    "tools.preflight": "usage or configuration error",
    "tools.smoke": "bad input",
}


def _invocations(stack: str, project: Path) -> dict[str, list[str]]:
    return {
        "tools.publish_model": ["--stack", stack, "--model", "resnet", "--version", "1", "--path", str(project / "export" / "1")],
        "tools.promote": ["--from", "prod", "--to", stack, "--root", str(project)],
        "tools.preview": ["--stack", stack, "--out", str(project / "build")],
        "tools.preflight": ["--stack", stack],
        "tools.smoke": ["--stack", stack],
    }


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("side", ["from", "to"])
def test_promote_between_stacks_checks_both_files_first(project: Path, case: str, side: str) -> None:
    bad = _edit(project, "dev" if side == "from" else "prod", BAD_FILES[case])
    source, target = (bad, "prod") if side == "from" else ("dev", bad)
    status = documented_status(project, "tools.promote", "usage or configuration error")
    done = run(project, "tools.promote", "--from", source, "--to", target, "--root", str(project))
    _assert_clean(done, status, f"Pulumi.{bad}.yaml")


@pytest.mark.parametrize("module", sorted(CONFIG_ERROR))
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_stack_file_is_one_message_and_the_documented_status(project: Path, module: str, case: str) -> None:
    stack = _edit(project, "dev", BAD_FILES[case])
    status = documented_status(project, module, CONFIG_ERROR[module])
    done = run(project, module, *_invocations(stack, project)[module])
    _assert_clean(done, status, f"Pulumi.{stack}.yaml")


@pytest.mark.parametrize("module", sorted(CONFIG_ERROR))
@pytest.mark.parametrize("stack", ["../dev", "no-such-stack", "dev/../../x"])
def test_a_bad_or_unknown_stack_name_is_refused(project: Path, module: str, stack: str) -> None:
    status = documented_status(project, module, CONFIG_ERROR[module])
    done = run(project, module, *_invocations(stack, project)[module])
    _assert_clean(done, status)


@pytest.mark.parametrize(
    "args, meaning",
    [
        (["--version", "0", "--path", "export/1"], "usage or configuration error"),
        (["--version", "-3", "--path", "export/1"], "usage or configuration error"),
        (["--version", "three", "--path", "export/1"], "usage or configuration error"),
        (["--version", "1"], "usage or configuration error"),
        # A directory that is no SavedModel is a refused publication, as publish says.
        (["--version", "1", "--path", "export/missing"], "publishing refused or failed"),
        (["--version", "1", "--path", "Pulumi.yaml"], "publishing refused or failed"),
        (["--version", "1", "--path", "components"], "publishing refused or failed"),
        # Warm-up examples are checked against the version's signatures (it has no serve graph).
        (["--version", "1", "--path", "export/1", "--warmup-examples", "Pulumi.yaml"],
         "publishing refused or failed"),
        (["--version", "1", "--path", "export/1", "--replace-warmup"], "usage or configuration error"),
    ],
    ids=["zero", "negative", "word", "no-path", "missing-path", "file-path", "not-a-savedmodel",
         "warmup-without-serve-graph", "replace-warmup-alone"],
)
def test_publish_model_checks_version_and_path_before_aws(project: Path, args: list[str], meaning: str) -> None:
    status = documented_status(project, "tools.publish_model", meaning)
    done = run(project, "tools.publish_model", "--stack", "dev", "--model", "resnet", *args)
    _assert_clean(done, status)


@pytest.mark.parametrize("module", sorted(CONFIG_ERROR))
def test_help_exits_zero(project: Path, module: str) -> None:
    done = run(project, module, "--help")
    assert done.returncode == 0 and "Traceback" not in done.stderr
