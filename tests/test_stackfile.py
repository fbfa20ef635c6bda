"""Stack files are read the way Pulumi reads them.

Pulumi parses `Pulumi.<stack>.yaml` with go-yaml v3 (pulumi/pulumi sdk/go/common/workspace
loaders.go), which refuses a key repeated in one mapping ("mapping key ... already defined
at line N") where PyYAML silently keeps the last; its config keys are `namespace:key`
(sdk/go/common/resource/config/key.go); a `secure:` value is a secret. Here: a syntax error
or a repeated key is one message with the line, a key the program would never see (no
namespace, another project's) is named rather than reported "missing", and secrets are
where secrets belong, no more and no less.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import PROJECT, StackConfigError, secret_settings
from tools.lib.stackfile import StackFileError, list_stacks, load_stack_file, stack_file

STACKS = list_stacks()


def _write(tmp_path: Path, stack: str, text: str) -> Path:
    path = stack_file(stack, tmp_path)
    path.write_text(text)
    return path


def _lines(stack: str) -> list[str]:
    return stack_file(stack).read_text().splitlines()


def _load(tmp_path: Path, lines: list[str], stack: str = "test") -> None:
    _write(tmp_path, stack, "\n".join(lines) + "\n")
    load_stack_file(stack, tmp_path)


def _config_lines(stack: str) -> list[int]:
    """Indexes of the lines holding a top-level config key (`  namespace:key:`)."""
    return [
        i
        for i, line in enumerate(_lines(stack))
        if line.startswith("  ") and not line.startswith("   ") and ":" in line and not line.strip().startswith("#")
    ]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("bad", ["  - item", "\ttabbed: 1"], ids=["sequence-in-map", "tab"])
def test_a_yaml_syntax_error_is_one_message_with_its_line(tmp_path: Path, stack: str, bad: str) -> None:
    lines = _lines(stack)
    for index in _config_lines(stack)[1::4]:
        broken = lines[:index] + [bad] + lines[index:]
        with pytest.raises(StackFileError) as info:
            _load(tmp_path, broken)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("stack 'test': Pulumi.test.yaml line ")
        assert f"line {index + 1}," in message, message


@pytest.mark.parametrize("stack", STACKS)
def test_a_repeated_key_is_refused_at_any_depth(tmp_path: Path, stack: str) -> None:
    lines = _lines(stack)
    candidates = [
        i for i, line in enumerate(lines)
        if line.strip() and not line.strip().startswith(("#", "-")) and line.rstrip().endswith(tuple("0123456789abcdefghijklmnopqrstuvwxyz\"'"))
        and ": " in line and line.startswith("  ")
    ]
    assert len(candidates) > 10
    for i in candidates[::5]:
        repeated = lines[: i + 1] + [lines[i]] + lines[i + 1 :]
        key = lines[i].split(":")[0].strip() if not lines[i].strip().startswith(PROJECT) else ":".join(lines[i].strip().split(":")[:2])
        with pytest.raises(StackFileError) as info:
            _load(tmp_path, repeated)
        message = str(info.value)
        assert f"line {i + 2}," in message and f"already defined at line {i + 1}" in message, message
        assert key in message


@pytest.mark.parametrize("stack", STACKS)
def test_a_key_without_the_project_namespace_is_named_not_missing(tmp_path: Path, stack: str) -> None:
    lines = _lines(stack)
    for i in _config_lines(stack):
        full = lines[i].strip().split(":")[0:2]
        if full[0] != PROJECT:
            continue
        key = full[1]
        for written in (key, f"tf-serving:{key}", f"my-app:{key}"):
            changed = list(lines)
            changed[i] = lines[i].replace(f"{PROJECT}:{key}:", f"{written}:", 1)
            with pytest.raises(StackConfigError) as info:
                _load(tmp_path, changed)
            errors = str(info.value).splitlines()[1:]
            assert errors[0].startswith(f"  - {written}:"), errors
            assert f"{PROJECT}:{key}" in errors[0]
            assert not [e for e in errors if e.startswith(f"  - {PROJECT}:{key}:")], errors


@pytest.mark.parametrize("stack", STACKS)
def test_secure_on_a_key_that_is_not_a_secret_is_refused(tmp_path: Path, stack: str) -> None:
    lines = _lines(stack)
    secrets = secret_settings()
    assert {"ingress_api_key", "alerting_secrets"} <= secrets
    for i in _config_lines(stack):
        namespace, key = lines[i].strip().split(":")[0:2]
        if key in secrets:
            continue
        indent = "    "
        # The value is replaced by a secret envelope (what `pulumi config set --secret` writes).
        j = i + 1
        while j < len(lines) and (lines[j].startswith(indent) or not lines[j].strip()):
            j += 1
        changed = lines[:i] + [f"  {namespace}:{key}:", f"{indent}secure: v1:AAAA"] + lines[j:]
        with pytest.raises(StackConfigError) as info:
            _load(tmp_path, changed)
        errors = str(info.value).splitlines()[1:]
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"  - {namespace}:{key}: is set as a secret"), errors


@pytest.mark.parametrize("key", sorted(secret_settings()))
def test_a_secret_key_in_clear_is_refused(tmp_path: Path, key: str) -> None:
    lines = [line for line in _lines("prod")]
    value = '{"oncall": "https://example.com/hook-0123456789"}' if key == "alerting_secrets" else "a-clear-value-of-twenty-chars"
    kept = []
    skipping = False
    for line in lines:
        if line.startswith(f"  {PROJECT}:{key}:"):
            skipping = True
            continue
        if skipping and line.startswith("    "):
            continue
        skipping = False
        kept.append(line)
    kept.append(f"  {PROJECT}:{key}: '{value}'")
    with pytest.raises(StackConfigError) as info:
        _load(tmp_path, kept)
    assert f"{PROJECT}:{key}: is in the stack file in clear" in str(info.value)


def test_a_missing_or_unreadable_stack_file_is_one_message(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match="stack 'nope': cannot read .*Pulumi.nope.yaml"):
        load_stack_file("nope", tmp_path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "config: [1, 2]\n", "just text\n"])
def test_a_document_of_the_wrong_shape_is_one_message(tmp_path: Path, text: str) -> None:
    _write(tmp_path, "test", text)
    with pytest.raises(StackFileError, match="Pulumi.test.yaml: "):
        load_stack_file("test", tmp_path)


@pytest.mark.parametrize("stack", STACKS)
def test_the_repo_stack_files_read_cleanly(stack: str) -> None:
    load_stack_file(stack)
