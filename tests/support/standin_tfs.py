"""A local stand-in for a deployed TF Serving endpoint, for tests only: TF Serving 2.19.1's REST
API and its gRPC PredictionService / ModelService on 127.0.0.1 (ephemeral ports, TLS optional),
answering in TF Serving's own formats, with the load balancer's behaviour in front where the
stack puts one (HTTP redirected to HTTPS, the API key, admin gRPC methods refused).

What it copies from TF Serving (tensorflow/serving at 2.19.1):
- REST paths: model_servers/http_rest_api_util.cc (kPredictionApiGegex, kModelStatusApiRegex,
  matched in full, case-insensitively); any other `/v1/` path is "Malformed request"
  (http_rest_api_handler.cc ProcessRequest), a path outside `/v1/` gets evhttp's bare 404
  (http_server.cc RestApiRequestDispatcher, util/net_http/server/internal/evhttp_server.cc);
- statuses: http_server.cc ToHTTPStatusCode; error bodies `{"error": "<message>"}`
  (util/json_tensor.cc MakeJsonFromStatus); messages of get_model_status_impl.cc, server_core.cc
  (labels), core/basic_manager.cc and core/manager.h ("Servable not found for request:
  Latest(m)" / "Specific(m, v)");
- bodies: model status as protobuf JSON with field names kept and defaults printed
  (http_rest_api_util.cc ToJsonString, as g3doc/api_rest.md shows it); metadata as
  `{"model_spec": ..., "metadata": {"signature_def": ...}}` (same file); predict in the row
  (`instances` -> `predictions`) or columnar (`inputs` -> `outputs`) format (json_tensor.cc);
- gRPC: model_servers/model_service_impl.cc (HandleReloadConfigRequest refuses a config that
  is not a model_config_list with INVALID_ARGUMENT), get_model_metadata_impl.cc (the resolved
  version in the response's model_spec).

Predictions echo the request's first input under every output name (the model's arithmetic is
not what is being tested). The load balancer parts: an unrouted gRPC method answers HTTP 404 at
the ALB, which a gRPC client reports as UNIMPLEMENTED (components/ingress.py
GRPC_PUBLIC_METHODS; tests/support/alb_rules.py); the WAF blocks a request without the API key
with 403 (AWS WAF's default block action), PERMISSION_DENIED to a gRPC client (gRPC's HTTP to
status mapping, doc/http-grpc-status-mapping.md).

It serves only loopback and must not import the code under test or reach the network.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.support.serving_pods import MODEL_STATUS_API, PREDICTION_API

HOST = "127.0.0.1"
SIGNATURE = "serving_default"  # tensorflow/cc/saved_model/signature_constants.h
# http_server.cc ToHTTPStatusCode, by gRPC code (TF's and gRPC's codes are the same numbers).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# What AWS WAF's default block action answers (403 and its short HTML page).
WAF_BLOCK_BODY = b"<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden</h1></center></body></html>"
RELOAD_UNSUPPORTED = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is "
    "currently supported"
)


class TfsError(Exception):
    """A TF Serving status other than OK: its gRPC code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Model:
    """One served model: the state of each version (ModelVersionStatus.State names:
    AVAILABLE, LOADING, START, UNLOADING, END), its labels, and its serving_default signature
    (input and output name -> (DataType name, shape; -1 for an unknown dimension))."""

    versions: dict[int, str] = field(default_factory=lambda: {1: "AVAILABLE"})
    labels: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, tuple[str, list[int]]] = field(default_factory=lambda: {"x": ("DT_FLOAT", [-1, 3])})
    outputs: dict[str, tuple[str, list[int]]] = field(default_factory=lambda: {"y": ("DT_FLOAT", [-1, 3])})
    # Every prediction fails with this status (code, message), as TF Serving reports a failed run.
    predict_error: tuple[grpc.StatusCode, str] | None = None


@dataclass
class Settings:
    """What the stand-in serves and how it behaves; change it while it runs."""

    models: dict[str, Model] = field(default_factory=dict)
    latency_seconds: float = 0.0  # added to every request, REST and gRPC
    api_key: str | None = None  # the key the WAF wants
    api_key_header: str = "x-api-key"
    enforce_api_key: bool = True  # False: the key is asked for but anything gets through
    refuse_admin: bool = True  # the ALB routes only the public gRPC methods
    redirect_http: bool = True  # the HTTP listener redirects to HTTPS (else it serves the API)


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path

    @property
    def ca(self) -> Path:
        """A self-signed certificate is its own CA."""
        return self.cert


def self_signed_certificate(directory: Path, host: str = HOST) -> Tls:
    """A self-signed certificate for `host` (an IP SAN, and `localhost`): with `cryptography`
    when it is installed, else the openssl CLI."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("neither the cryptography package nor openssl is installed") from None
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(cert),
             "-addext", f"subjectAltName=IP:{host},DNS:localhost"],
            check=True, capture_output=True,
        )
        return Tls(cert, key)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Tls(cert, key)


class Core:
    """TF Serving's ServerCore as far as the APIs see it: status, metadata and predictions of
    the configured models, with TF Serving's errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _model(self, name: str) -> Model | None:
        return self.settings.models.get(name)

    def resolve(self, spec: model_pb2.ModelSpec) -> int:
        """The version a request is served by (ServerCore::GetServableHandle): the given one,
        the label's, or the newest AVAILABLE; NotFound when it is not AVAILABLE."""
        model = self._model(spec.name)
        kind = spec.WhichOneof("version_choice")
        if kind == "version_label":
            # server_core.cc GetModelVersionForLabel
            if model is None or spec.version_label not in model.labels:
                raise TfsError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {spec.version_label}"
                )
            version = model.labels[spec.version_label]
        elif kind == "version":
            version = spec.version.value
        else:
            available = [v for v, s in (model.versions.items() if model else []) if s == "AVAILABLE"]
            if not available:
                raise TfsError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
            return max(available)
        if model is None or model.versions.get(version) != "AVAILABLE":
            raise TfsError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({spec.name}, {version})"
            )
        return version

    def status(self, request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
        """get_model_status_impl.cc: one version when the spec names one, else every version
        (a label is not looked at)."""
        if not request.HasField("model_spec"):
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        model = self._model(spec.name)
        versions = model.versions if model else {}
        response = get_model_status_pb2.GetModelStatusResponse()
        if spec.HasField("version"):
            version = spec.version.value
            if version not in versions:
                raise TfsError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {spec.name}")
            chosen = {version: versions[version]}
        else:
            if not versions:
                raise TfsError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
            chosen = dict(sorted(versions.items()))
        for version, state in chosen.items():
            entry = response.model_version_status.add()
            entry.version = version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.SetInParent()  # ToStatusProto(servable health): OK, no message
        return response

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """get_model_metadata_impl.cc: signature_def only, for the resolved version."""
        if not request.HasField("model_spec"):
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise TfsError(
                grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for name in request.metadata_field:
            if name != "signature_def":
                raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
        version = self.resolve(request.model_spec)
        model = self.settings.models[request.model_spec.name]
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signature = signatures.signature_def[SIGNATURE]
        signature.method_name = "tensorflow/serving/predict"
        for target, tensors in ((signature.inputs, model.inputs), (signature.outputs, model.outputs)):
            for name, (dtype, shape) in tensors.items():
                info = target[name]
                info.name = f"{SIGNATURE}_{name}:0"
                info.dtype = types_pb2.DataType.Value(dtype)
                info.tensor_shape.CopyFrom(
                    tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
                )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response

    def check_predict(self, spec: model_pb2.ModelSpec, signature_name: str) -> Model:
        self.resolve(spec)
        model = self.settings.models[spec.name]
        if (signature_name or SIGNATURE) != SIGNATURE:
            raise TfsError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature name: "{signature_name}" not found in signature def',
            )
        if model.predict_error is not None:
            raise TfsError(*model.predict_error)
        return model

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        model = self.check_predict(request.model_spec, request.model_spec.signature_name)
        missing = sorted(set(model.inputs) - set(request.inputs))
        if missing:
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"input tensor alias not found in signature: {missing[0]}")
        first: tensor_pb2.TensorProto = request.inputs[next(iter(model.inputs))]
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.resolve(request.model_spec)
        response.model_spec.signature_name = SIGNATURE
        for name in model.outputs:
            response.outputs[name].CopyFrom(first)
        return response


def _json(message: Any) -> str:
    # http_rest_api_util.cc ToJsonString: add_whitespace, always_print_primitive_fields,
    # preserve_proto_field_names (g3doc/api_rest.md shows the status that way too).
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=1
    )


class RestApi:
    """http_rest_api_handler.cc over the Core: (HTTP status, body) for one request."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        try:
            return 200, self._dispatch(method, path, body)
        except TfsError as exc:
            # json_tensor.cc MakeJsonFromStatus (rapidjson PrettyWriter: 4-space indent)
            return HTTP_STATUS[exc.code], json.dumps({"error": exc.message}, indent=4)

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_API.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = match.groups()
            spec = self._spec(name, version, label)
            if verb.lower() != "predict":
                raise TfsError(grpc.StatusCode.UNIMPLEMENTED, f"{verb} is not served by the stand-in")
            return self._predict(spec, body)
        if method == "GET":
            match = MODEL_STATUS_API.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, subresource = match.groups()
            if not name:
                raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
            spec = self._spec(name, version, label)
            if subresource and subresource.lower() == "metadata":
                return self._metadata(spec)
            return _json(self.core.status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec)))
        raise malformed

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
        # http_rest_api_util.cc FillModelSpecWithNameVersionAndLabel
        spec = model_pb2.ModelSpec(name=name)
        if version:
            spec.version.value = int(version)
        if label:
            spec.version_label = label
        return spec

    def _metadata(self, spec: model_pb2.ModelSpec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self.core.metadata(request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return f'{{\n"model_spec":{_json(response.model_spec)},\n"metadata": {{"signature_def": {_json(signatures)}}}\n}}\n'

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        try:
            doc = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {exc}") from None
        if doc is None:
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Parse error: The document is empty")
        if not isinstance(doc, dict):
            raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Value: {json.dumps(doc)} Is not object")
        model = self.core.check_predict(spec, str(doc.get("signature_name", "")))
        names = list(model.inputs)
        outputs = list(model.outputs)
        if "instances" in doc and "inputs" in doc:
            raise TfsError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            )
        if "instances" in doc:
            rows = doc["instances"]
            if not isinstance(rows, list):
                raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "Expecting 'instances' to be an list/array")
            if not rows:
                raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "No values in 'instances' array")
            # json_tensor.cc FillTensorMapFromInstancesList: all objects (keys = the inputs) or
            # all values (the one input).
            objects = isinstance(rows[0], dict)
            for i, row in enumerate(rows):
                if objects and not isinstance(row, dict):
                    raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"Expecting object but got list at item {i} of input list")
                if not objects and isinstance(row, dict):
                    raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"Expecting value/list but got object at item {i} of input list")
                if objects and set(row) != set(names):
                    raise TfsError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Failed to process element: {i} of 'instances' list. JSON object: {json.dumps(row)} "
                        f"keys must be equal to: {','.join(sorted(names))}",
                    )
            values = [row[names[0]] if objects else row for row in rows]
            predictions = [v if len(outputs) == 1 else {o: v for o in outputs} for v in values]
            return json.dumps({"predictions": predictions}, indent=4)
        if "inputs" in doc:
            # json_tensor.cc FillTensorMapFromInputsMap
            inputs = doc["inputs"]
            if not isinstance(inputs, dict) and len(names) > 1:
                raise TfsError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                    "as per tensorinfo_map",
                )
            if isinstance(inputs, dict):
                for name in sorted(names):
                    if name not in inputs:
                        raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, f"Missing named input: {name} in 'inputs' object.")
                inputs = inputs[names[0]]
            out: Any = inputs if len(outputs) == 1 else {o: inputs for o in outputs}
            return json.dumps({"outputs": out}, indent=4)
        raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


@dataclass
class Call:
    """One request the stand-in saw (after the load balancer's checks passed or not)."""

    protocol: str  # "https", "http" or "grpc"
    method: str  # HTTP method, or the gRPC method's full path
    path: str
    headers: dict[str, str]
    body: bytes = b""  # a REST request's body


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: StandinTfs) -> None:
        self.server = server

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        return self.server.grpc_call("/tensorflow.serving.PredictionService/Predict", context, lambda: self.server.core.predict(request))

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return self.server.grpc_call(
            "/tensorflow.serving.PredictionService/GetModelMetadata", context, lambda: self.server.core.metadata(request)
        )


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: StandinTfs) -> None:
        self.server = server

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return self.server.grpc_call(
            "/tensorflow.serving.ModelService/GetModelStatus", context, lambda: self.server.core.status(request)
        )

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        def reload() -> model_management_pb2.ReloadConfigResponse:
            if request.config.WhichOneof("config") != "model_config_list":
                raise TfsError(grpc.StatusCode.INVALID_ARGUMENT, RELOAD_UNSUPPORTED)
            self.server.reloaded.append(request.config)
            return model_management_pb2.ReloadConfigResponse()

        return self.server.grpc_call(
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest", context, reload, admin=True
        )


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is no error of the stand-in's: say nothing."""


class StandinTfs:
    """The stand-in, as a context manager: `rest_url` (https with TLS), `http_url` (the plain
    listener the load balancer redirects), `grpc_target`; `calls` lists what reached it."""

    def __init__(self, settings: Settings, tls: Tls | None = None) -> None:
        self.settings = settings
        self.tls = tls
        self.core = Core(settings)
        self.rest = RestApi(self.core)
        self.calls: list[Call] = []
        self.reloaded: list[Any] = []
        self._lock = threading.Lock()
        self._http_servers: list[ThreadingHTTPServer] = []
        self._grpc: grpc.Server | None = None
        self.rest_port = self.http_port = self.grpc_port = 0

    @property
    def rest_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.rest_port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def key_ok(self, headers: dict[str, str]) -> bool:
        s = self.settings
        return s.api_key is None or not s.enforce_api_key or headers.get(s.api_key_header.lower()) == s.api_key

    def grpc_call(self, path: str, context: grpc.ServicerContext, run: Any, admin: bool = False) -> Any:
        headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.record(Call("grpc", path, path, headers))
        time.sleep(self.settings.latency_seconds)
        if admin and self.settings.refuse_admin:
            # The ALB's fixed 404 for an unrouted path, as a gRPC client sees it.
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Received http2 header with status: 404")
        if not self.key_ok(headers):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Received http2 header with status: 403")
        try:
            return run()
        except TfsError as exc:
            context.abort(exc.code, exc.message)

    def _handler(self, protocol: str) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def _reply(self, status: int, body: bytes, content_type: str | None, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.split("?", 1)[0]
                standin.record(Call(protocol, self.command, path, headers, body))
                time.sleep(standin.settings.latency_seconds)
                if protocol == "http" and standin.settings.redirect_http:
                    # The HTTP listener's HTTPRoute: RequestRedirect to https, 301.
                    location = f"https://{HOST}:{standin.rest_port}{self.path}"
                    self._reply(301, b"", None, {"Location": location})
                    return
                if not standin.key_ok(headers):
                    self._reply(403, WAF_BLOCK_BODY, "text/html")
                    return
                if not path.lower().startswith("/v1/"):
                    self._reply(404, b"<HTML><HEAD><TITLE>404 Not Found</TITLE></HEAD></HTML>", "text/html")
                    return
                status, text = standin.rest.handle(self.command, path, body)
                self._reply(status, text.encode(), "application/json")

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler

    def __enter__(self) -> StandinTfs:
        rest = _QuietServer((HOST, 0), self._handler("https" if self.tls else "http"))
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            rest.socket = context.wrap_socket(rest.socket, server_side=True)
        plain = _QuietServer((HOST, 0), self._handler("http"))
        self._http_servers = [rest, plain]
        self.rest_port, self.http_port = rest.server_address[1], plain.server_address[1]
        for server in self._http_servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._grpc)
        if self.tls:
            credentials = grpc.ssl_server_credentials([(self.tls.key.read_bytes(), self.tls.cert.read_bytes())])
            self.grpc_port = self._grpc.add_secure_port(f"{HOST}:0", credentials)
        else:
            self.grpc_port = self._grpc.add_insecure_port(f"{HOST}:0")
        self._grpc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._http_servers:
            server.shutdown()
            server.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None)

    def calls_to(self, protocol: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.protocol == protocol]


def half_plus_two_like(versions: dict[int, str] | None = None, labels: dict[str, int] | None = None) -> Model:
    """A small model with one float input of a known shape, the kind TF Serving's examples use."""
    return Model(
        versions=versions or {1: "AVAILABLE"},
        labels=labels or {},
        inputs={"x": ("DT_FLOAT", [-1, 3])},
        outputs={"y": ("DT_FLOAT", [-1, 3])},
    )

