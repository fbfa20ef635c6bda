"""The smoke test's calls: HTTP(S) requests that never follow a redirect, and gRPC calls over
TLS with TF Serving's generated stubs (tensorflow-serving-api and TensorFlow's messages, set up
by the Makefile), each with a timeout; any network failure becomes one CallError line.

It must not decide what an answer means (checks.py does), nor retry.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

T = TypeVar("T")


class CallError(Exception):
    """The call got no answer: refused, timed out, TLS failed, name not found; one line."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: str


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, or the CA bundle given (a private CA, or a test's)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def http_call(
    url: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float, context: ssl.SSLContext,
) -> HttpAnswer:
    """One request to `url`; a redirect is returned, not followed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    path = parts.path or "/"
    try:
        send = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
        connection.request(method, path + (f"?{parts.query}" if parts.query else ""), body=body, headers=send)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
    except (OSError, http.client.HTTPException) as exc:
        raise CallError(f"{method} {url}: {_reason(exc, timeout)}") from None
    finally:
        connection.close()


class Grpc:
    """A TLS channel to the gRPC endpoint with TF Serving's two services."""

    def __init__(self, target: str, ca_file: Path | None, timeout: float) -> None:
        root = ca_file.read_bytes() if ca_file else None
        self.target = target
        self.timeout = timeout
        self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root))
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: Callable[..., T], request: Any, metadata: list[tuple[str, str]]) -> T:
        """The response, or grpc.RpcError for a status the server (or load balancer) sent;
        CallError when nothing answered (UNAVAILABLE: refused, TLS, DNS; DEADLINE_EXCEEDED)."""
        try:
            return method(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CallError(f"gRPC {self.target}: timed out after {self.timeout:g} s") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                details = (exc.details() if isinstance(exc, grpc.Call) else "") or "unavailable"
                raise CallError(f"gRPC {self.target}: unavailable: {details.splitlines()[0]}") from None
            raise
