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
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import standin_tfs
from tools.lib.stackfile import load_stack_file
from tools.loadtest.predict import InputsError, parse_inputs
from tools.loadtest.target import SmokeInputError, resolve
from tools.lib.deployed_stack import API_KEY_ENV
from tools.loadtest.stats import PERCENTILES, StepRecorder, StepResult, knee, percentile_key

REPO = Path(__file__).resolve().parent.parent


def rank_percentile(values: list[float], p: float) -> float:
    """The p-th percentile as HdrHistogram defines it, computed from the raw values: the
    smallest value with at least round(p% of n) values at or below it, rounding half up
    (hdrh/histogram.py get_target_count_at_percentile: int(p * n / 100 + 0.5), at least 1;
    Java's HdrHistogram uses the same rank)."""
    ordered = sorted(values)
    rank = max(int(p * len(ordered) / 100 + 0.5), 1)
    return ordered[rank - 1]


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
        want = rank_percentile(latencies, p)
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


def test_endpoints_are_the_smoke_tests_with_overrides(tmp_path: Path) -> None:
    cfg = load_stack_file("dev")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"rest_url": "https://tfs-dev.example.com/", "grpc_url": "tfs-dev-grpc.example.com:443"}))
    endpoints = resolve("dev", cfg, outputs_file=outputs, environ={})
    assert (endpoints.rest_url, endpoints.grpc_target, endpoints.grpc_tls) == (
        "https://tfs-dev.example.com", "tfs-dev-grpc.example.com:443", True)
    assert endpoints.headers() == {}
    # Given endpoints win over the outputs, which are then not read.
    given = resolve("dev", cfg, outputs_file=tmp_path / "absent.json", rest_url="http://127.0.0.1:1",
                    grpc_url="127.0.0.1:2", grpc_tls=False, environ={})
    assert (given.rest_url, given.grpc_target, given.grpc_tls) == ("http://127.0.0.1:1", "127.0.0.1:2", False)


def test_the_api_key_is_sent_when_the_stack_requires_one() -> None:
    prod = load_stack_file("prod")
    assert prod.ingress is not None
    access = prod.ingress.access.model_copy(update={"require_api_key": True, "api_key_header": "X-Tfs-Key"})
    cfg = prod.model_copy(update={"ingress": prod.ingress.model_copy(update={"access": access})})
    endpoints = resolve("prod", cfg, rest_url="https://a", grpc_url="a:443", environ={API_KEY_ENV: "k1"})
    assert endpoints.headers() == {"x-tfs-key": "k1"}
    with pytest.raises(SmokeInputError, match=r"stack 'prod': ingress.access.require_api_key is true but no key"):
        resolve("prod", cfg, rest_url="https://a", grpc_url="a:443", environ={})


def loadtest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # No pulumi CLI: endpoints only from flags; nothing but loopback is reachable.
        "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin",
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
    }
    env.pop(API_KEY_ENV, None)
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
        ([], "error: stack 'dev': cannot read its outputs"),
        (["--rest-url", "http://127.0.0.1:9", "--grpc-url", "127.0.0.1"], "error: stack 'dev': output 'grpc_url' is '127.0.0.1'; expected <host>:<port>"),
    ],
)
def test_bad_input_is_one_message_and_status_2(args: list[str], message: str) -> None:
    done = loadtest("--stack", "dev", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [message] or done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_stack_is_named(tmp_path: Path) -> None:
    done = loadtest("--stack", "nope", "--rest-url", "http://127.0.0.1:9", "--grpc-url", "127.0.0.1:9")
    assert done.returncode == 2 and "stack 'nope'" in done.stderr and "Traceback" not in done.stderr


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- Whole runs against the stand-in ------------------------------------------------------

# Each request waits this long per request in flight at the stand-in (itself included), so a
# step of N closed-loop users sees about N times it: 50, 100, 200, 400 ms at 1, 2, 4, 8 users.
# The stand-in's gRPC server runs 8 workers, so no step goes past 8 users.
PER_REQUEST_IN_FLIGHT_S = 0.050
# Above 2 users' ~100 ms with room for a busy machine's stalls (tens of ms, seen here), below
# 4 users' ~200 ms: the knee is the step of 4 users.
P99_TARGET_MS = 165.0
STEPS = (1, 2, 4, 8)


class RisingLatency:
    """The stand-in's `latency_seconds`, read once per request just before it sleeps: the
    number of requests then in flight (those still sleeping, and this one) times a unit."""

    def __init__(self, unit: float) -> None:
        self.unit = unit
        self._ends: list[float] = []
        self._lock = threading.Lock()

    def __get__(self, obj: object, owner: type | None = None) -> float:
        with self._lock:
            now = time.monotonic()
            self._ends = [end for end in self._ends if end > now]
            latency = self.unit * (len(self._ends) + 1)
            self._ends.append(now + latency)
            return latency

    def __set__(self, obj: object, value: float) -> None:
        pass  # the dataclass's own default; this stand-in's latency is the rule above


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    class Settings(standin_tfs.Settings):
        latency_seconds = RisingLatency(PER_REQUEST_IN_FLIGHT_S)

    # http.server writes the headers and the body apart; with Nagle's algorithm the body waits
    # for the client's delayed ACK (up to 40 ms on Linux), which would swamp the latencies
    # under test (socketserver.StreamRequestHandler.disable_nagle_algorithm).
    monkeypatch.setattr(socketserver.StreamRequestHandler, "disable_nagle_algorithm", True)
    failing = standin_tfs.half_plus_two_like()
    failing.predict_error = (grpc.StatusCode.UNAVAILABLE, "the model's run failed")
    settings = Settings(
        models={"half-plus-two": standin_tfs.half_plus_two_like(), "resnet": failing},
        redirect_http=False,
    )
    with standin_tfs.StandinTfs(settings) as server:
        yield server


def run_against(standin: Any, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = loadtest(
        "--stack", "dev", "--rest-url", standin.rest_url, "--grpc-url", standin.grpc_target, "--grpc-plaintext",
        "--inputs", '{"x": [[1.0, 2.0, 5.0]]}', "--out", str(out), *args,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_knee_is_found_where_latency_passes_the_target(standin: Any, tmp_path: Path) -> None:
    run_against(standin, tmp_path, "--model", "half-plus-two", "--concurrency", ",".join(map(str, STEPS)),
                "--step-seconds", "1", "--step-requests", "400", "--p99-target-ms", str(P99_TARGET_MS))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["p99_target_ms"] == P99_TARGET_MS and report["p99_target_from"] == "--p99-target-ms"
    for protocol in ("rest", "grpc"):
        knee_found = report["knee"][protocol]
        assert knee_found is not None and knee_found["concurrency"] == 4, (protocol, report["steps"])
        steps = [s for s in report["steps"] if s["protocol"] == protocol]
        assert [s["concurrency"] for s in steps] == list(STEPS)
        # Latency rises with the users, as the stand-in makes it (N users: about N units).
        p50s = [s["p50_ms"] for s in steps]
        assert p50s == sorted(p50s)
        assert all(s["errors"] == 0 and 0 < s["requests"] <= 400 for s in steps)
        assert all(s["ended_by"] == "time" and 0.95 <= s["seconds"] <= 1.5 for s in steps)
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_percentiles_match_the_requests_it_logged(standin: Any, tmp_path: Path) -> None:
    run_against(standin, tmp_path, "--model", "half-plus-two", "--concurrency", "1,4",
                "--step-seconds", "1", "--step-requests", "150")
    steps = read_csv(tmp_path / "steps.csv")
    logged = read_csv(tmp_path / "requests.csv")
    assert len(steps) == 4
    for row in steps:
        mine = [float(r["latency_ms"]) for r in logged
                if r["protocol"] == row["protocol"] and r["step"] == row["step"] and not r["error"]]
        assert len(mine) == int(row["requests"]) - int(row["errors"])
        assert float(row["throughput_rps"]) == pytest.approx(int(row["requests"]) / float(row["seconds"]), rel=0.01)
        for p in PERCENTILES:
            want = rank_percentile(mine, p)
            got = float(row[f"{percentile_key(p)}_ms"])
            assert abs(got - want) <= want * 0.001 + 0.002, (row["protocol"], row["step"], p, got, want)
    # The stack's own SLO is the default target (Pulumi.dev.yaml: 1000 ms), never passed here.
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["p99_target_from"] == "monitoring.thresholds.latency_p99_ms"
    assert report["p99_target_ms"] == load_stack_file("dev").monitoring.thresholds.latency_p99_ms
    assert report["knee"] == {"rest": None, "grpc": None}


def test_errors_are_counted_and_a_step_ends_at_its_request_count(standin: Any, tmp_path: Path) -> None:
    # Two models taken in turn, one of which fails every prediction: about half the requests.
    run_against(standin, tmp_path, "--concurrency", "2", "--step-seconds", "10", "--step-requests", "60")
    report = json.loads((tmp_path / "report.json").read_text())
    logged = read_csv(tmp_path / "requests.csv")
    for protocol, kind in (("rest", "http 503"), ("grpc", "grpc UNAVAILABLE")):
        (step_row,) = [s for s in report["steps"] if s["protocol"] == protocol]
        assert step_row["ended_by"] == "requests" and step_row["requests"] == 60
        assert step_row["errors_by_kind"] == {kind: step_row["errors"]}
        assert abs(step_row["errors"] - 30) <= 2, step_row
        assert step_row["errors"] == sum(1 for r in logged if r["protocol"] == protocol and r["error"] == kind)
    # What reached the stand-in: at least every counted request, at most one more per user
    # (the request each user had in flight when the step stopped), all over loopback.
    grpc_calls = [c for c in standin.calls_to("grpc") if c.path.endswith("/Predict")]
    rest_calls = [c for c in standin.calls_to("http") if c.path.endswith(":predict")]
    for calls in (grpc_calls, rest_calls):
        assert 60 <= len(calls) <= 60 + 2 + 2  # plus requests that finished while users spawned
