"""Stack files: `Pulumi.<stack>.yaml` read as Pulumi reads it, into the flat settings Pulumi
hands the program, and through the program's own validation into a StackConfig
(`load_stack_file`, the one way every command and test gets a stack's config from a file).

It must not hold rules of its own about what a valid config is (the config model has them),
nor talk to AWS or the Pulumi CLI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from components.config import StackConfig, StackConfigError, parse_pulumi_settings

ROOT = Path(__file__).resolve().parents[2]
# Pulumi stack names: letters, digits, '_', '.' and '-'; no path separator, so a stack file
# is always directly in the root.
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_stack_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The arguments of a command that reaches a stack's AWS account or endpoints (--stack,
    --timeout), or the exit status when there is nothing to run: 0 after --help, 2 for
    argparse's own usage errors or a bad stack name or timeout (one error line printed)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    if not STACK_NAME.match(args.stack):
        problem = f"{args.stack!r} is not a stack name (letters, digits, '_', '.', '-')"
    elif not args.timeout > 0:
        problem = f"--timeout must be more than 0 seconds (got {args.timeout:g})"
    else:
        return args
    print(f"error: {problem}", file=sys.stderr)
    return 2


# Offline, encrypted values can't be decrypted; the program sees this marker instead.
OFFLINE_SECRET = "offline-preview-secret"


def stack_file(stack: str, root: Path = ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def list_stacks(root: Path = ROOT) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def open_envelopes(
    value: Any, opened: Callable[[dict[str, Any]], tuple[bool, Any]]
) -> tuple[Any, bool]:
    """Replace every map `opened` recognises as a secret envelope (at any depth) by what it
    returns for it; report whether there was one."""
    if isinstance(value, dict):
        is_envelope, inner = opened(value)
        if is_envelope:
            return open_envelopes(inner, opened)[0], True
        found = False
        out = {}
        for k, v in value.items():
            out[k], secret = open_envelopes(v, opened)
            found |= secret
        return out, found
    if isinstance(value, list):
        items = [open_envelopes(v, opened) for v in value]
        return [v for v, _ in items], any(secret for _, secret in items)
    return value, False


def strip_secure(value: Any) -> tuple[Any, bool]:
    """Replace `{secure: ...}` values (at any depth) with a marker; report whether any was."""
    return open_envelopes(value, lambda m: (set(m) == {"secure"}, OFFLINE_SECRET))


class StackFileError(StackConfigError):
    """A stack file Pulumi itself would not read: one message naming the file and the line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML as Pulumi reads it (go-yaml v3): a key repeated in one mapping is an error
    ("mapping key ... already defined at line N"), not a silent last-one-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"mapping key {key!r} already defined at line {seen[key]}",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_document(text: str, source: str, stack: str) -> dict[str, Any] | None:
    """The stack file's YAML, or StackFileError naming the line of a syntax error or of a
    repeated key, and a document that is not a map with a `config:` map."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise StackFileError(f"stack '{stack}': {source}{where}: not valid YAML: {detail}") from None
    if document is not None and not isinstance(document, dict):
        raise StackFileError(f"stack '{stack}': {source}: must be a YAML map with a `config:` map")
    config = (document or {}).get("config")
    if config is not None and not isinstance(config, dict):
        raise StackFileError(f"stack '{stack}': {source}: `config:` must be a map of `namespace:key: value`")
    return document


def settings_from_document(document: dict[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """Pulumi's flat config: `namespace:key` -> string (JSON for structured values)."""
    settings: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in ((document or {}).get("config") or {}).items():
        key = str(key)
        value, secret = strip_secure(value)
        settings[key] = value if isinstance(value, str) else json.dumps(value)
        if secret:
            secret_keys.append(key)
    return settings, secret_keys


def _read_text(path: Path, stack: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise StackFileError(f"stack '{stack}': cannot read {path}: {exc.strerror}") from None


def read_settings(path: Path, stack: str | None = None) -> tuple[dict[str, str], list[str]]:
    """A stack file's settings; StackFileError (no traceback) for a file Pulumi would refuse."""
    name = stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return settings_from_document(parse_document(_read_text(path, name), path.name, name))


def load_stack_text(text: str, stack: str, source: str) -> StackConfig:
    """A stack file's text validated exactly as the program validates it (YAML as Pulumi reads
    it, then Pulumi's flat settings, then the config model); raises StackConfigError naming
    the stack, the key, the value and the rule."""
    settings, secret_keys = settings_from_document(parse_document(text, source, stack))
    return parse_pulumi_settings(settings, stack, source=source, secret_keys=secret_keys)


def load_stack_file(stack: str, root: Path = ROOT, *, path: Path | None = None) -> StackConfig:
    """`Pulumi.<stack>.yaml` in `root` (or the file at `path`), validated as the program
    validates it: a StackConfig, or StackConfigError naming the stack, the key, the value
    and the rule."""
    path = path or stack_file(stack, root)
    return load_stack_text(_read_text(path, stack), stack, path.name)


def claimed_names(stack: str, cfg: Any) -> dict[str, set[str]]:
    """Names a stack claims that no other stack may: DNS names (global), and per region
    (stacks may share an account) the cluster and the physical names derived from it."""
    from components.image_cache import repository_prefix
    from components.model_layout import model_bucket_name

    region = cfg.aws_region
    claims: dict[str, set[str]] = {
        "cluster": {f"{region}/{cfg.cluster.name}"},
        # The account is unknown offline: a derived bucket name differs exactly when the cluster's does.
        "bucket": {cfg.model_store.bucket_name or model_bucket_name(cfg, "<account>")},
    }
    if cfg.ingress and cfg.ingress.enabled:
        claims["host"] = {cfg.ingress.rest_host, cfg.ingress.grpc_host}
    if cfg.serving.image_cache.enabled:
        claims["image cache prefix"] = {f"{region}/{repository_prefix(cfg.serving.image_cache.repository_prefix, stack)}"}
    return claims


def shared_claims(root: Path = ROOT) -> list[str]:
    """Every name two repo stacks both claim, as `kind name: stack, stack`."""
    owners: dict[tuple[str, str], list[str]] = {}
    for stack in list_stacks(root):
        for kind, names in claimed_names(stack, load_stack_file(stack, root)).items():
            for name in names:
                owners.setdefault((kind, name), []).append(stack)
    return [f"{kind} {name}: {', '.join(s)}" for (kind, name), s in sorted(owners.items()) if len(s) > 1]
