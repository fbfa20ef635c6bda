"""The load test (tools/loadtest): its figures checked against an independent computation, its
knee, its request bodies, its answers to bad input, and whole runs of the command against the
stand-in TF Serving on loopback (REST and gRPC) whose latency rises with concurrency and which
fails a known share of requests.

The command runs in a subprocess: locust patches the process for gevent when imported.
Every run is bounded (a few steps of at most a second or a few hundred requests) and talks to
127.0.0.1 only.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tools.lib.endpoints import EndpointError, resolve_endpoints
from tools.lib.stackfile import load_stack_file
from tools.loadtest.predict import InputsError, parse_inputs
from tools.loadtest.stats import PERCENTILES, StepRecorder, StepResult, knee, percentile_key

REPO = Path(__file__).resolve().parent.parent


def nearest_rank(values: list[float], p: float) -> float:
    """The p-th percentile by the nearest-rank rule: the smallest value with at least p% of
    the values at or below it (what an HDR histogram reports, to its precision)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_step_percentiles_match_an_independent_computation(seed: int) -> None:
    rng = random.Random(seed)
    # A long-tailed mix: most requests fast, a few slow, over five orders of magnitude.
    latencies = [rng.lognormvariate(math.log(20), 0.6) for _ in range(3000)] + [
        rng.uniform(500, 5000) for _ in range(40)
    ]
    recorder = StepRecorder("rest", 0, 4, max_requests=10_000)
    for ms in latencies:
        recorder.record(ms, None)
    result = recorder.result(seconds=2.0, ended_by="time")
    for p in PERCENTILES:
        got = result.latency_ms[percentile_key(p)]
        want = nearest_rank(latencies, p)
        assert got is not None
        # 3 significant digits: within 0.1% of the recorded value (plus the 1 us unit).
        assert abs(got - want) <= want * 0.001 + 0.001, (p, got, want)
    assert result.requests == len(latencies) and result.errors == 0
    assert result.throughput == pytest.approx(len(latencies) / 2.0)


def test_errors_are_counted_apart_from_latencies() -> None:
    recorder = StepRecorder("grpc", 1, 2, max_requests=100)
    for i in range(10):
        recorder.record(10.0 + i, None)
    for _ in range(3):
        recorder.record(0.5, "grpc UNAVAILABLE")
    recorder.record(0.5, "http 503")
    result = recorder.result(1.0, "time")
    assert (result.requests, result.errors) == (14, 4)
    assert result.error_rate == pytest.approx(4 / 14)
    assert result.errors_by_kind == {"grpc UNAVAILABLE": 3, "http 503": 1}
    # The fast failures do not pull the latency down: p50 is among the successes.
    assert result.latency_ms["p50"] == pytest.approx(14.0, rel=0.001)


def test_a_step_counts_no_more_than_its_requests() -> None:
    recorder = StepRecorder("rest", 0, 1, max_requests=5)
    counted = [recorder.record(1.0, None) for _ in range(8)]
    assert counted == [True] * 5 + [False] * 3
    assert recorder.full and recorder.result(1.0, "requests").requests == 5


def test_a_step_with_only_errors_has_no_latency() -> None:
    recorder = StepRecorder("rest", 0, 1, max_requests=5)
    recorder.record(1.0, "http 500")
    assert recorder.result(1.0, "time").latency_ms == {percentile_key(p): None for p in PERCENTILES}


def step(protocol: str, index: int, p99: float | None) -> StepResult:
    return StepResult(protocol, index, 2**index, 100, 0, 1.0, "time",
                      {"p50": 1.0, "p90": 2.0, "p99": p99, "p99.9": p99}, {})


def test_the_knee_is_the_first_step_above_the_target() -> None:
    results = [step("rest", 0, 10), step("rest", 1, 40), step("rest", 2, 60), step("rest", 3, 30),
               step("grpc", 0, 10), step("grpc", 1, 20)]
    found = knee(results, "rest", 50)
    assert found is not None and found.step == 2
    assert knee(results, "grpc", 50) is None
    # A p99 exactly on the target is within it.
    assert knee([step("rest", 0, 50)], "rest", 50) is None
    # A step where nothing succeeded is past the knee.
    found = knee([step("rest", 0, 10), step("rest", 1, None)], "rest", 50)
    assert found is not None and found.step == 1


def test_inputs_become_a_columnar_rest_body() -> None:
    inputs = parse_inputs('{"x": [[1], [2.5]], "ids": [[1, 2]], "words": ["a", "b"]}', "serving_default")
    assert json.loads(inputs.rest_body()) == {
        "signature_name": "serving_default",
        "inputs": {"x": [[1.0], [2.5]], "ids": [[1, 2]], "words": ["a", "b"]},
    }
    shapes = {t.name: (t.dtype, t.shape) for t in inputs.tensors}
    assert shapes == {"x": ("DT_FLOAT", (2, 1)), "ids": ("DT_INT64", (1, 2)), "words": ("DT_STRING", (2,))}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"x": [[1.0], [2.0, 3.0]]}', "ragged"),
        ('{"x": [1.0, "a"]}', "all numbers or all strings"),
        ('{"x": []}', "empty list"),
        ("[1, 2]", "JSON object"),
        ("{x}", "not JSON"),
    ],
)
def test_bad_inputs_are_refused_with_the_rule(text: str, problem: str) -> None:
    with pytest.raises(InputsError, match=problem):
        parse_inputs(text)


def test_endpoints_come_from_the_stack_outputs_and_file() -> None:
    cfg = load_stack_file("dev")
    outputs = {"rest_url": "https://tfs-dev.example.com/", "grpc_url": "tfs-dev-grpc.example.com:443"}
    endpoints = resolve_endpoints("dev", cfg, stack_outputs=lambda stack: outputs, environ={})
    assert endpoints.rest_url == "https://tfs-dev.example.com"
    assert endpoints.grpc_target == "tfs-dev-grpc.example.com:443" and endpoints.grpc_tls
    assert endpoints.models == tuple(sorted(cfg.serving.models))
    assert endpoints.headers() == {}
    # Given values win over the outputs, which are then not read.
    given = resolve_endpoints("dev", cfg, rest_url="http://127.0.0.1:1", grpc_target="127.0.0.1:2",
                              grpc_tls=False, stack_outputs=lambda stack: pytest.fail("read"), environ={})
    assert (given.rest_url, given.grpc_target, given.grpc_tls) == ("http://127.0.0.1:1", "127.0.0.1:2", False)


def test_the_api_key_comes_from_the_environment_or_the_stacks_secret() -> None:
    prod = load_stack_file("prod")
    assert prod.ingress is not None
    access = prod.ingress.access.model_copy(update={"require_api_key": True, "api_key_header": "x-tfs-key"})
    cfg = prod.model_copy(update={"ingress": prod.ingress.model_copy(update={"access": access})})
    header = "x-tfs-key"
    outputs = {"rest_url": "https://tfs.example.com"}
    from_env = resolve_endpoints("prod", cfg, stack_outputs=lambda s: outputs, environ={"TFS_API_KEY": "k1"},
                                 secret=lambda s, k: pytest.fail("asked"))
    assert from_env.headers() == {header: "k1"}
    asked: list[tuple[str, str]] = []
    from_secret = resolve_endpoints("prod", cfg, stack_outputs=lambda s: outputs, environ={},
                                    secret=lambda s, k: asked.append((s, k)) or "k2")
    assert from_secret.headers() == {header: "k2"} and asked == [("prod", "tf-serving-eks:ingress_api_key")]
    with pytest.raises(EndpointError, match=r"stack 'prod': ingress.access.require_api_key is true but no API key"):
        resolve_endpoints("prod", cfg, stack_outputs=lambda s: outputs, environ={}, secret=lambda s, k: None)


def test_no_endpoints_is_one_clear_error() -> None:
    with pytest.raises(EndpointError, match=r"stack 'dev': no endpoints.*--rest-url"):
        resolve_endpoints("dev", load_stack_file("dev"), stack_outputs=lambda s: None, environ={})


def loadtest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # No pulumi CLI: endpoints only from flags; nothing but loopback is reachable.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
    }
    env.pop("TFS_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "tools.loadtest", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "4,2"], "error: stack 'dev': --concurrency '4,2': must be rising whole numbers"),
        (["--concurrency", "0,1"], "error: stack 'dev': --concurrency '0,1'"),
        (["--model", "nope"], "error: stack 'dev': --model nope: not in serving.models (half-plus-two, resnet)"),
        (["--inputs", '{"x": [[1], [1, 2]]}'], "error: stack 'dev': --inputs: input 'x': ragged"),
        (["--step-seconds", "0"], "error: stack 'dev': --step-seconds 0.0: must be at least 0.1"),
        (["--p99-target-ms", "-1"], "error: stack 'dev': --p99-target-ms -1.0: must be above 0"),
        ([], "error: stack 'dev': no endpoints"),
        (["--protocol", "grpc", "--rest-url", "http://127.0.0.1:9"], "error: stack 'dev': no grpc endpoint: pass --grpc-url"),
    ],
)
def test_bad_input_is_one_message_and_status_2(args: list[str], message: str) -> None:
    done = loadtest("--stack", "dev", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [message] or done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_stack_is_named(tmp_path: Path) -> None:
    done = loadtest("--stack", "nope", "--rest-url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "stack 'nope'" in done.stderr and "Traceback" not in done.stderr


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))
