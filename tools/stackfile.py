"""Read `Pulumi.<stack>.yaml` into the flat settings Pulumi hands a program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Offline, encrypted values can't be decrypted; the program sees this marker instead.
OFFLINE_SECRET = "offline-preview-secret"


def stack_file(stack: str, root: Path = ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def list_stacks(root: Path = ROOT) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def strip_secure(value: Any) -> tuple[Any, bool]:
    """Replace `{secure: ...}` values (at any depth) with a marker; report whether any was."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return OFFLINE_SECRET, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], secret = strip_secure(v)
            found |= secret
        return out, found
    if isinstance(value, list):
        items = [strip_secure(v) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def settings_from_document(document: dict[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """Pulumi's flat config: `namespace:key` -> string (JSON for structured values)."""
    settings: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in ((document or {}).get("config") or {}).items():
        value, secret = strip_secure(value)
        settings[key] = value if isinstance(value, str) else json.dumps(value)
        if secret:
            secret_keys.append(key)
    return settings, secret_keys


def read_settings(path: Path) -> tuple[dict[str, str], list[str]]:
    with path.open() as handle:
        return settings_from_document(yaml.safe_load(handle))
