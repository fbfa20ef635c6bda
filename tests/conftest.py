"""Session fixtures: every repo stack rendered once (`rendered_stack`) and the stack-name
parameter; the garbage collector's thresholds for a suite that keeps many renderings alive;
the longest modules run first; the time of each test group (module) printed at the end. Fixtures and reporting only, no
assertions of their own."""

from __future__ import annotations

import gc
from collections import defaultdict

import pytest

from tools.lib.mock_engine import Rendering, render
from tools.lib.stackfile import list_stacks, read_settings, stack_file

# A rendering allocates tens of thousands of short-lived asyncio handles and Outputs, and the
# suite keeps hundreds of renderings alive; with CPython's default thresholds (700, 10, 10) the
# collector re-walks all of them over and over: measured here, a prod render took 0.77 s with
# the defaults and 0.52 s with these. Collections still run, only less often.
gc.set_threshold(50_000, 20, 20)

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked `long_running` first, the rest in their order: with the tests spread
    over the cores one module at a time (`make test`), the longest start first and the short
    ones fill in beside them, so no core is left with a long module at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack_name" in metafunc.fixturenames:
        metafunc.parametrize("stack_name", list_stacks())


# --- the time of each group: the seconds spent in each test module (set-up, call and
# tear-down of its tests, summed over the workers when the suite runs in parallel) ---

_seconds: defaultdict[str, float] = defaultdict(float)
_tests: defaultdict[str, int] = defaultdict(int)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _seconds[module] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tests[module] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _seconds:
        return
    terminalreporter.section("time per test group (module), slowest first")
    for module, seconds in sorted(_seconds.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:7.1f} s  {_tests[module]:4d} tests  {module}")
    terminalreporter.write_line(f"{sum(_seconds.values()):7.1f} s  in all (CPU-side, before parallelism)")
