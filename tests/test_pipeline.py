"""The example GitHub Actions workflow (examples/github-actions/deploy-model.yml), checked as
GitHub would take it and as its steps would run.

actionlint (the workflow checker, with shellcheck on every `run:` script) must accept it and
refuse a broken copy; every `python -m tools.X` command and `make` target it calls must exist
and accept its flags (the commands' own argparse parsers); the stacks it names must be the
repo's; the Prometheus it asks about and the rule group it reads must be the stack's; and two
of its scripts (which version a push carries; whether an alert fires after the soak) are run
with bash against a git repository and a stand-in of Prometheus's rules API.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config.monitoring import MonitoringConfig
from components.monitoring import prometheus_rule_spec, stack_prometheus_url
from tests.support.external_tools import program
from tools.lib.model_repository import MODEL_NAME
from tools.lib.stackfile import list_stacks, load_stack_file

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "examples" / "github-actions" / "deploy-model.yml"
# Values the workflow's variables take in a run, for reading its command lines.
SAMPLE_ENV = {
    "MODEL": "resnet",
    "VERSION": "4",
    "MODEL_PATH": "models/resnet/4",
    "CANARY_WEIGHT": "10",
    "SOAK_MINUTES": "0",
    "RUNNER_TEMP": "/tmp",
    "PULUMI_ORG": "my-org",
}


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def steps() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, job in workflow()["jobs"].items():
        for step in job["steps"]:
            yield name, step


def step_named(name: str) -> dict[str, Any]:
    found = [s for _, s in steps() if s.get("name") == name]
    assert len(found) == 1, f"no single step {name!r}"
    return found[0]


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = program("actionlint", venv=True)
    program("shellcheck", venv=True)  # actionlint runs it on each `run:` script when on PATH
    env = {**os.environ, "PATH": str(Path(binary).parent) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        [binary, "-no-color", str(path)], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_actionlint_accepts_the_workflow() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        # A step output that no step sets.
        (("steps.up.outputs.kubeconfig_command", "steps.nope.outputs.kubeconfig_command"), "nope"),
        # A job depending on a job that does not exist.
        (("needs: [version, dev]", "needs: [version, staging]"), "staging"),
        # A shell bug shellcheck finds (an unquoted variable in a test).
        (('[ -d "$path" ]', "[ -d $path ]"), "SC2086"),
    ],
)
def test_actionlint_refuses_a_broken_copy(tmp_path: Path, breakage: tuple[str, str], expected: str) -> None:
    old, new = breakage
    text = WORKFLOW.read_text()
    assert old in text
    broken = tmp_path / "deploy-model.yml"
    broken.write_text(text.replace(old, new, 1))
    done = actionlint(broken)
    assert done.returncode != 0 and expected in done.stdout, done.stdout


def test_every_action_is_pinned_by_commit_with_its_release_beside_it() -> None:
    uses = re.findall(r"uses: (\S+)(.*)", WORKFLOW.read_text())
    assert {u.split("@")[0] for u, _ in uses} >= {
        "pulumi/actions", "aws-actions/configure-aws-credentials", "pulumi/auth-actions"
    }
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), (ref, comment)


def test_aws_credentials_come_from_oidc_only() -> None:
    jobs = workflow()["jobs"]
    for name, job in jobs.items():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"):
                assert set(step["with"]) >= {"role-to-assume", "aws-region"}
                assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"])
                assert job["permissions"]["id-token"] == "write", name
    assert "secrets." not in WORKFLOW.read_text()


def test_prod_waits_for_its_environment_and_dev_going_well() -> None:
    jobs = workflow()["jobs"]
    assert jobs["prod"]["environment"] == "prod"
    assert "dev" in jobs["prod"]["needs"]
    assert jobs["dev"]["environment"] == "dev"


def test_the_pulumi_cli_is_the_sdk_release_the_program_pins() -> None:
    pinned = re.search(r"^pulumi==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)
    assert pinned is not None
    assert workflow()["env"]["PULUMI_VERSION"] == pinned.group(1)
    for _, step in steps():
        if str(step.get("uses", "")).startswith("pulumi/actions@"):
            assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"


def expand(text: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_ENV.get(m.group(1), m.group(0)), text)


TOOL_CALL = re.compile(r"(?:\.venv/bin/python|python3?) -m (tools(?:\.\w+)+)([^\n;&|]*)")
MAKE_CALL = re.compile(r"\bmake ([\w./-]+)([^\n;&|]*)")


def tool_calls(script: str) -> list[tuple[str, list[str]]]:
    return [(m.group(1), shlex.split(expand(m.group(2)))) for m in TOOL_CALL.finditer(script)]


def scripts() -> list[str]:
    return [step["run"] for _, step in steps() if "run" in step]


class _Accepted(Exception):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args_ = args


def parsed_by_the_tool(module: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The command line through the tool's own parser (run as `main(argv)`), stopped right after
    argparse accepted it, before the tool does anything."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Accepted(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    entry = importlib.import_module(module if (REPO / module.replace(".", "/")).with_suffix(".py").is_file()
                                    else f"{module}.__main__")
    try:
        entry.main(argv)
    except _Accepted as accepted:
        return accepted.args_
    except SystemExit as exc:
        pytest.fail(f"python -m {module} {shlex.join(argv)}: refused by argparse (exit {exc.code})")
    pytest.fail(f"python -m {module} never parsed its command line")


def make_recipe(target: str, assignments: list[str]) -> str:
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *assignments],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, f"make {target}: {done.stderr}"
    return done.stdout


def all_tool_calls() -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []
    for script in scripts():
        calls += tool_calls(script)
        for m in MAKE_CALL.finditer(script):
            calls += tool_calls(make_recipe(m.group(1), shlex.split(expand(m.group(2)))))
    return calls


def test_the_workflow_calls_the_tools_the_pipeline_needs() -> None:
    called = {module for module, _ in all_tool_calls()}
    assert called >= {"tools.publish_model", "tools.promote", "tools.smoke"}, called


def test_every_make_target_it_calls_exists() -> None:
    targets = [m.group(1) for script in scripts() for m in MAKE_CALL.finditer(script)]
    assert "smoke" in targets
    for script in scripts():
        for m in MAKE_CALL.finditer(script):
            make_recipe(m.group(1), shlex.split(expand(m.group(2))))


def test_every_tool_command_line_is_accepted_by_the_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = all_tool_calls()
    assert calls
    for module, argv in calls:
        args = parsed_by_the_tool(module, argv, monkeypatch)
        checks = getattr(importlib.import_module(f"{module}.__main__") if module == "tools.promote"
                         else importlib.import_module(module), "_check_args", None)
        if checks is not None:
            checks(args)  # the tool's own rules on combinations (raises UsageError)
        monkeypatch.undo()


def test_each_tool_answers_help(tmp_path: Path) -> None:
    for module in sorted({module for module, _ in all_tool_calls()}):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "usage:" in done.stdout, (module, done.stderr)


def stacks_named() -> set[str]:
    names: set[str] = set()
    for module, argv in all_tool_calls():
        for flag in ("--stack", "--from", "--to"):
            names |= {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag}
    for script in scripts():
        names |= set(re.findall(r"\bSTACK=(\S+)", script))
    for _, step in steps():
        stack = (step.get("with") or {}).get("stack-name")
        if stack:
            names.add(str(stack).rsplit("/", 1)[-1])
    return names


def test_the_stacks_it_names_are_the_repos_and_valid() -> None:
    named = stacks_named()
    assert named == {"dev", "prod"}
    assert named <= set(list_stacks())
    for stack in named:
        load_stack_file(stack)  # raises StackConfigError on an invalid stack file


def test_the_model_name_rule_is_the_publishers() -> None:
    script = step_named("Resolve the model, version and folder")["run"]
    assert f"[[ $model =~ {MODEL_NAME.pattern} ]]" in script


def test_it_reads_the_stacks_prometheus_and_our_alert_group() -> None:
    env = workflow()["jobs"]["prod"]["env"]
    prod = load_stack_file("prod")
    assert isinstance(prod.monitoring, MonitoringConfig)
    assert prod.monitoring.installs_prometheus
    url = stack_prometheus_url(prod.monitoring.namespace)
    assert url == f"http://{env['PROMETHEUS_SERVICE']}.{env['PROMETHEUS_NAMESPACE']}.svc:9090"
    groups = {g["name"]: g for g in prometheus_rule_spec([], [], "x")["groups"]}
    assert env["ALERT_GROUP"] in groups


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bash = program("bash")
    return subprocess.run(
        [bash, "-e", "-c", script], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def pushed(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("x\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def resolve(repo: Path, before: str, event: str = "push", **inputs: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    out = repo.parent / "github_output"
    out.write_text("")
    env = {
        "EVENT": event, "BEFORE": before, "AFTER": git(repo, "rev-parse", "HEAD"), "GITHUB_OUTPUT": str(out),
        **{f"INPUT_{k.upper()}": v for k, v in inputs.items()},
    }
    done = run_script(step_named("Resolve the model, version and folder")["run"], repo, env)
    return done, dict(line.split("=", 1) for line in out.read_text().splitlines())


def add_version(repo: Path, model: str, version: str) -> None:
    folder = repo / "models" / model / version / "variables"
    folder.mkdir(parents=True)
    (folder.parent / "saved_model.pb").write_bytes(b"\x08\x01")
    (folder / "variables.index").write_bytes(b"x")


def test_a_push_of_one_version_names_it(pushed: Path) -> None:
    before = git(pushed, "rev-parse", "HEAD")
    add_version(pushed, "resnet", "4")
    git(pushed, "add", ".")
    git(pushed, "commit", "-q", "-m", "resnet 4")
    done, outputs = resolve(pushed, before)
    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs == {"model": "resnet", "version": "4", "path": "models/resnet/4"}


def test_a_push_of_two_versions_is_refused(pushed: Path) -> None:
    before = git(pushed, "rev-parse", "HEAD")
    add_version(pushed, "resnet", "4")
    add_version(pushed, "resnet", "5")
    git(pushed, "add", ".")
    git(pushed, "commit", "-q", "-m", "two")
    done, outputs = resolve(pushed, before)
    assert done.returncode == 1 and "one model version per commit" in done.stdout
    assert outputs == {}


@pytest.mark.parametrize(
    ("model", "version", "problem"),
    [("ResNet", "4", "is not a model name"), ("resnet", "0", "not a positive integer"), ("resnet", "4", "no folder")],
)
def test_bad_dispatch_inputs_are_refused(pushed: Path, model: str, version: str, problem: str) -> None:
    done, outputs = resolve(pushed, "", event="workflow_dispatch", model=model, version=version, path="models/resnet/4")
    assert done.returncode == 1 and problem in done.stdout, done.stdout
    assert outputs == {}


def rules_api(states: dict[str, str], group: str = "tf-serving.alerts") -> dict[str, Any]:
    """A response of Prometheus's GET /api/v1/rules?type=alert (web/api/v1/api.go,
    RuleDiscovery: groups of rules, each alerting rule with its `state`)."""
    return {
        "status": "success",
        "data": {"groups": [
            {"name": "other", "file": "f", "rules": [{"type": "alerting", "name": "Watchdog", "state": "firing"}]},
            {"name": group, "file": "f", "rules": [
                {"type": "alerting", "name": name, "state": state, "alerts": []} for name, state in states.items()
            ]},
        ]},
    }


def alert_check(tmp_path: Path, response: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The soak step with kubectl and curl stood in for: port-forward does nothing, curl
    answers as Prometheus would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "rules.json").write_text(json.dumps(response))
    (bin_dir / "kubectl").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "curl").write_text(
        f'#!/bin/sh\ncase "$*" in *api/v1/rules*) cat {tmp_path / "rules.json"};; esac\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    program("jq")
    env = {**workflow()["jobs"]["prod"]["env"], "SOAK_MINUTES": "0",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env = {k: str(v) for k, v in env.items() if "${{" not in str(v)}
    return run_script(step_named("Soak, then no alert of ours may be firing")["run"], tmp_path, env)


def test_the_canary_passes_when_none_of_our_alerts_fires(tmp_path: Path) -> None:
    done = alert_check(tmp_path, rules_api({"TFServingHighErrorRatio": "inactive", "TFServingLatencySLO": "pending"}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "::warning::pending TFServingLatencySLO" in done.stdout


def test_the_canary_fails_when_one_of_our_alerts_fires(tmp_path: Path) -> None:
    done = alert_check(tmp_path, rules_api({"TFServingHighErrorRatio": "firing", "TFServingLatencySLO": "inactive"}))
    assert done.returncode == 1
    assert "::error::firing TFServingHighErrorRatio" in done.stdout


def test_the_canary_fails_when_our_rules_are_not_loaded(tmp_path: Path) -> None:
    done = alert_check(tmp_path, rules_api({"TFServingHighErrorRatio": "inactive"}, group="someone-else"))
    assert done.returncode == 1 and "no rule group tf-serving.alerts" in done.stdout
