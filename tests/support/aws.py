"""Fixtures for tests that talk to AWS through moto: fake credentials, no real Pulumi CLI.

They only isolate a test from the developer's environment; they must not create AWS
resources (each test makes what it needs inside its own moto context).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.lib import stack_store


@pytest.fixture(autouse=True)
def no_deployed_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack-outputs lookup is never the developer's real `pulumi` and its stacks."""
    monkeypatch.setattr(stack_store, "pulumi_stack_outputs", lambda stack: None)


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials only, and none of the developer's AWS profile or endpoints."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
