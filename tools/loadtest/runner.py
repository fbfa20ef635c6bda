"""The load itself: locust in library mode runs closed-loop users (each sends a Predict, waits
for the answer, sends the next) over REST (locust's FastHttpUser) and gRPC (TF Serving's
PredictionService stub, wrapped as a locust User), in steps of concurrency, each step ended
by its time or its request count, whichever comes first.

Importing it patches the process for gevent (locust does on import), so only the command
imports it, never a test process; it must not compute figures (stats.py) nor write files.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
from locust import User, constant, task  # patches the process for gevent on import
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from tools.loadtest.predict import PredictInputs
from tools.loadtest.stats import StepRecorder, StepResult
from tools.loadtest.target import Endpoints

# One finished request: protocol, step, latency in ms, error kind or None, seconds since the
# step started.
Sample = tuple[str, int, float, str | None, float]
# Each user's first request opens its connection (TCP, TLS, HTTP/2 for gRPC): a cost no later
# request pays, so it is sent but not counted.
WARMUP = "warmup"


@dataclass(frozen=True)
class Plan:
    protocols: tuple[str, ...]
    concurrency: tuple[int, ...]
    step_seconds: float
    step_requests: int
    timeout_seconds: float
    models: tuple[str, ...]


def _grpc_error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if callable(code):
        status = code()
        return f"grpc {getattr(status, 'name', status)}"
    return type(exc).__name__


def _rest_error(exc: BaseException | None, status: int) -> str:
    return f"http {status}" if status else type(exc).__name__ if exc else "error"


def _user_classes(endpoints: Endpoints, inputs: PredictInputs, plan: Plan) -> dict[str, type[User]]:
    models = itertools.cycle(plan.models)
    # Bytes: geventhttpclient sends headers and a bytes body in one write (client.py), where
    # a second small write would wait on Nagle's algorithm for the server's delayed ACK.
    body = inputs.rest_body()
    headers = {"content-type": "application/json", **endpoints.headers()}

    class RestUser(FastHttpUser):
        host = endpoints.rest_url
        wait_time = constant(0)
        network_timeout = plan.timeout_seconds
        connection_timeout = plan.timeout_seconds
        # FastHttpUser skips certificate checks unless told (locust/contrib/fasthttp.py,
        # `insecure = True`): a load test of a real endpoint must see its real certificate.
        insecure = False

        warm = False

        @task
        def predict(self) -> None:
            model = next(models)
            warmup, self.warm = not self.warm, True
            with self.client.post(
                f"/v1/models/{model}:predict", data=body,  # type: ignore[arg-type]  # "String/bytes"
                headers=headers, name=model, catch_response=True, context={WARMUP: warmup},
            ) as response:
                if response.status_code != 200:
                    response.failure(_rest_error(response.error, response.status_code or 0))

    requests = {m: inputs.grpc_request(m) for m in plan.models} if "grpc" in plan.protocols else {}
    metadata = tuple(endpoints.headers().items())

    class GrpcUser(User):
        wait_time = constant(0)

        def on_start(self) -> None:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            if endpoints.grpc_tls:
                self.channel = grpc.secure_channel(endpoints.grpc_target, grpc.ssl_channel_credentials())
            else:
                self.channel = grpc.insecure_channel(endpoints.grpc_target)
            self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

        def on_stop(self) -> None:
            self.channel.close()

        warm = False

        @task
        def predict(self) -> None:
            model = next(models)
            warmup, self.warm = not self.warm, True
            start = time.perf_counter()
            error: Exception | None = None
            try:
                self.stub.Predict(requests[model], timeout=plan.timeout_seconds, metadata=metadata)
            except Exception as exc:  # noqa: BLE001  (every failure is a counted error)
                error = exc
            self.environment.events.request.fire(
                request_type="grpc", name=model, response_time=(time.perf_counter() - start) * 1000,
                response_length=0, exception=error,
                context={"kind": _grpc_error(error) if error else None, WARMUP: warmup},
            )

    return {"rest": RestUser, "grpc": GrpcUser}


def run(
    endpoints: Endpoints,
    inputs: PredictInputs,
    plan: Plan,
    on_step: Callable[[StepResult], None] = lambda result: None,
    on_sample: Callable[[Sample], None] = lambda sample: None,
) -> list[StepResult]:
    """Every step of every protocol, one after the other: a step starts its users all at once,
    counts the requests that finish until it has `step_requests` of them or `step_seconds`
    have passed, then stops its users (a request still in flight is not counted, nor each
    user's first, which opens its connection)."""
    logging.getLogger("locust").setLevel(logging.ERROR)  # its spawn-rate advice, per step
    if "grpc" in plan.protocols:
        # grpcio's blocking calls would hold the whole gevent loop without this
        # (grpc/experimental/gevent.py: "must be called before any other gRPC operations").
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
    classes = _user_classes(endpoints, inputs, plan)
    results: list[StepResult] = []
    for protocol in plan.protocols:
        env = Environment(user_classes=[classes[protocol]], host=endpoints.rest_url)
        runner = env.create_local_runner()
        for index, users in enumerate(plan.concurrency):
            recorder = StepRecorder(protocol, index, users, plan.step_requests)
            done = gevent.event.Event()
            started = [0.0]
            ended = [False]

            def on_request(response_time: float, exception: Any = None, context: Any = None,
                           **_: Any) -> None:
                if not started[0] or ended[0] or (context or {}).get(WARMUP):
                    return  # still spawning, the step is over (its users are stopping), or warm-up
                kind = None
                if exception is not None:
                    # gRPC's kind is in the context; REST's is the message given to
                    # response.failure (locust raises it as a CatchResponseError).
                    kind = (context or {}).get("kind") or str(exception)[:80] or type(exception).__name__
                if recorder.record(float(response_time), kind):
                    on_sample((protocol, index, float(response_time), kind, time.monotonic() - started[0]))
                if recorder.full:
                    done.set()

            env.events.request.add_listener(on_request)
            try:
                runner.start(users, spawn_rate=max(users * 100, 100), wait=False)
                while runner.user_count < users:
                    gevent.sleep(0.001)
                started[0] = time.monotonic()
                ended_by = "requests" if done.wait(timeout=plan.step_seconds) else "time"
                ended[0] = True
                elapsed = time.monotonic() - started[0]
                runner.stop()
            finally:
                env.events.request.remove_listener(on_request)
            result = recorder.result(elapsed, ended_by)
            results.append(result)
            on_step(result)
        runner.quit()
    return results
