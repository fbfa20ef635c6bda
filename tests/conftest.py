"""Session fixtures: every repo stack rendered once (`rendered_stack`) and the stack-name
parameter; fixtures only, no assertions of their own."""

from __future__ import annotations

import pytest

from tools.lib.mock_engine import Rendering, render
from tools.lib.stackfile import list_stacks, read_settings, stack_file

_cache: dict[str, Rendering] = {}


def rendered_stack(stack: str) -> Rendering:
    """Each repo stack rendered once per test session."""
    if stack not in _cache:
        settings, secret_keys = read_settings(stack_file(stack))
        _cache[stack] = render(stack, settings, secret_keys)
    return _cache[stack]


@pytest.fixture(scope="session")
def dev() -> Rendering:
    return rendered_stack("dev")


@pytest.fixture(scope="session")
def prod() -> Rendering:
    return rendered_stack("prod")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack_name" in metafunc.fixturenames:
        metafunc.parametrize("stack_name", list_stacks())
