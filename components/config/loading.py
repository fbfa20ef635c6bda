"""From Pulumi's settings (or a raw dict) to a validated `StackConfig`, and the checks
that need what only deployment knows (an existing cluster's zones).

It reads and decodes; the rules themselves belong to the models, never here.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Collection, Mapping
from typing import Any

import pulumi
from pydantic import SecretStr, ValidationError

from components.config.base import ENVIRONMENTS, PROJECT
from components.config.errors import StackConfigError, _show, format_errors
from components.config.stack import StackConfig


def check_pool_zones(cfg: StackConfig, stack: str, zones: Collection[str], source: str | None = None) -> None:
    """Refuse pools that cannot be split over `zones` (an existing cluster's subnet zones),
    with the same message shape as a config error, before any GPU resource is created."""
    problems = cfg.zone_problems(len(zones))
    if problems:
        lines = [f"stack '{stack}': invalid configuration in {source or f'Pulumi.{stack}.yaml'}:"]
        lines += [
            f"  - {PROJECT}:{p.key}: {p.message} (zones {', '.join(sorted(zones))}) (got {_show(p.value)})"
            for p in problems
        ]
        raise StackConfigError("\n".join(lines))


def parse_stack_config(
    raw: Mapping[str, Any],
    stack: str,
    source: str | None = None,
    secret_keys: Collection[str] | None = None,
    named_elsewhere: Collection[str] = (),
) -> StackConfig:
    """Validate a stack's config (keys without the project prefix; `aws:region` as is).

    `secret_keys` are the Pulumi config keys that were set as secrets, when known: secret
    settings found outside it are refused. `named_elsewhere` are top-level keys whose error
    is already reported (written without namespace or under another project's, or secret
    where no secret belongs): no second error for them.
    """
    source = source or f"Pulumi.{stack}.yaml"
    env = raw.get("environment")
    context = {
        "environment": env if env in ENVIRONMENTS else None,
        "environment_unusable": env not in ENVIRONMENTS,
        "secret_keys": set(secret_keys) if secret_keys is not None else None,
    }
    try:
        return StackConfig.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        raise StackConfigError(format_errors(stack, source, exc, named_elsewhere)) from None


# Config namespaces besides the project's: the providers the program uses (their own keys,
# e.g. `aws:region`, `aws:profile`) and Pulumi's.
PROVIDER_NAMESPACES = ("aws", "kubernetes", "random", "pulumi")


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_holds_secret(arg) for arg in typing.get_args(annotation))


def secret_settings() -> set[str]:
    """The top-level keys whose values are secrets (set with `pulumi config set --secret`)."""
    return {
        field.alias or name
        for name, field in StackConfig.model_fields.items()
        if _holds_secret(field.annotation)
    }


def settings_problems(
    values: Mapping[str, str], secret_keys: Collection[str] | None
) -> tuple[list[str], set[str]]:
    """Error lines for keys Pulumi hands the program but the model never sees (no namespace,
    another project's) and for secrets where none belongs; and the model keys they stand for
    (so those get no second error, e.g. "Field required")."""
    lines: list[str] = []
    meant: set[str] = set()
    fields = {f.alias or n for n, f in StackConfig.model_fields.items()}
    secrets = secret_settings()
    for key in values:
        namespace, sep, name = key.partition(":")
        if not sep:
            guess = key if key in fields else None
            lines.append(
                f"  - {key}: has no namespace; project keys are written "
                f"`{PROJECT}:{guess or '<key>'}`"
            )
            if guess:
                meant.add(guess)
        elif namespace != PROJECT and namespace not in PROVIDER_NAMESPACES:
            near = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f"; did you mean `{PROJECT}:{near[0]}`?" if near else ""
            lines.append(
                f"  - {key}: namespace '{namespace}' is not this project ({PROJECT}) nor a "
                f"provider it configures ({', '.join(PROVIDER_NAMESPACES)}){hint}"
            )
            if name in fields:
                meant.add(name)
    for key in sorted(secret_keys or ()):
        namespace, _, name = key.partition(":")
        if (namespace == PROJECT and name not in secrets) or key == "aws:region":
            meant.add(name if namespace == PROJECT else key)
            lines.append(
                f"  - {key}: is set as a secret (`secure:`) but is not one; set it in clear "
                f"(pulumi config set {key} <value>). Secret keys: {', '.join(sorted(secrets))}"
            )
    return lines, meant


def parse_pulumi_settings(
    values: Mapping[str, str],
    stack: str,
    source: str | None = None,
    secret_keys: Collection[str] | None = None,
) -> StackConfig:
    """Pulumi's flat settings validated as a StackConfig: every key Pulumi would hand the
    program is accounted for, and all problems come in one StackConfigError."""
    source = source or f"Pulumi.{stack}.yaml"
    problems, meant = settings_problems(values, secret_keys)
    try:
        cfg = parse_stack_config(
            config_from_pulumi_settings(values), stack, source, secret_keys, named_elsewhere=meant
        )
    except StackConfigError as exc:
        if not problems:
            raise
        lines = str(exc).splitlines()
        raise StackConfigError("\n".join([lines[0], *problems, *lines[1:]])) from None
    if problems:
        raise StackConfigError(
            "\n".join([f"stack '{stack}': invalid configuration in {source}:", *problems])
        )
    return cfg


def config_from_pulumi_settings(values: Mapping[str, str]) -> dict[str, Any]:
    """Turn Pulumi's flat `namespace:key -> string` config into the model's raw dict.

    Structured values arrive as JSON text; plain strings stay strings. Keys of other
    namespaces are ignored, except `aws:region`.
    """
    raw: dict[str, Any] = {}
    prefix = f"{PROJECT}:"
    for key, text in values.items():
        if key == "aws:region":
            raw[key] = text
        elif key.startswith(prefix):
            try:
                raw[key[len(prefix):]] = json.loads(text)
            except (TypeError, json.JSONDecodeError):
                raw[key[len(prefix):]] = text
    return raw


def load_stack_config() -> StackConfig:
    """Read and validate the running stack's config (`pulumi up` or the offline preview)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, str] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys |= {k for k in values if runtime_config.is_config_secret(k)}
    return parse_pulumi_settings(values, pulumi.get_stack(), secret_keys=secret_keys)
