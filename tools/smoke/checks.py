"""The smoke checks, against the public endpoints of a deployed stack: per model, REST and gRPC
model status (every expected version AVAILABLE), metadata, each label resolved to its version
(and the canary's label and version reaching the canary pods), one prediction; then what must
stay closed: the admin gRPC method, plain HTTP (redirected), calls without the API key.

What TF Serving answers, and so what a pass means (tensorflow/serving 2.19.1):
- model status ignores a label (model_servers/get_model_status_impl.cc looks at the version
  only), so labels are checked through metadata, whose model_spec carries the version the
  label resolved to (servables/tensorflow/get_model_metadata_impl.cc);
- HandleReloadConfigRequest with an empty config is refused by TF Serving itself with
  INVALID_ARGUMENT (model_servers/model_service_impl.cc) and changes nothing: that answer
  proves the call reached a pod. The load balancer answers an unrouted method with HTTP 404,
  which gRPC reports as UNIMPLEMENTED (components/ingress.py GRPC_PUBLIC_METHODS);
- gRPC calls go to the canary pods with the header components/ingress.py CANARY_HEADER names;
  REST calls to the canary label or version are routed there by path.

It must not change anything on the server (the reload it sends carries no config), nor print:
the command prints the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
)

from components.config import CANARY_LABEL
from components.ingress import CANARY_HEADER
from tools.smoke.calls import CallError, Grpc, HttpAnswer, http_call, tls_context
from tools.smoke.examples import EXAMPLES_DIR, NoExample, derived_example, example_file, read_example
from tools.smoke.target import ExpectedModel, Target

Verdict = Literal["pass", "fail", "note"]
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.Value("AVAILABLE")
REDIRECTS = (301, 302, 307, 308)


@dataclass(frozen=True)
class Result:
    check: str  # e.g. "model resnet: version 3 status"
    call: str  # e.g. "REST GET /v1/models/resnet/versions/3"
    expected: str
    got: str
    verdict: Verdict

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "call": self.call, "expected": self.expected, "got": self.got, "verdict": self.verdict}


def _state_name(state: int) -> str:
    return str(get_model_status_pb2.ModelVersionStatus.State.Name(state))


def _grpc_failure(exc: grpc.RpcError) -> str:
    code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    return f"{code}: {details.splitlines()[0]}" if details else code


class Smoke:
    def __init__(
        self, target: Target, *, timeout: float, ca_file: Path | None = None, examples_dir: Path = EXAMPLES_DIR
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.context = tls_context(ca_file)
        self.examples_dir = examples_dir
        self.grpc = Grpc(target.grpc_target, ca_file, timeout)
        self.results: list[Result] = []

    # -- plumbing ----------------------------------------------------------------------------

    def _add(self, check: str, call: str, expected: str, got: str, ok: bool) -> bool:
        self.results.append(Result(check, call, expected, got, "pass" if ok else "fail"))
        return ok

    def _key(self) -> dict[str, str]:
        t = self.target
        return {t.api_key_header: t.api_key} if t.api_key else {}

    def _metadata(self, canary: bool = False, key: bool = True) -> list[tuple[str, str]]:
        out = list(self._key().items()) if key else []
        return out + ([(CANARY_HEADER, CANARY_LABEL)] if canary else [])

    def _rest(self, path: str, *, body: bytes | None = None, key: bool = True, base: str | None = None) -> HttpAnswer:
        return http_call(
            f"{base or self.target.rest_url}{path}",
            method="POST" if body is not None else "GET",
            body=body,
            headers=self._key() if key else {},
            timeout=self.timeout,
            context=self.context,
        )

    def _http_failure(self, answer: HttpAnswer) -> str:
        """`HTTP <status>: <TF Serving's error message>` (util/json_tensor.cc: {"error": ...})."""
        try:
            message = json.loads(answer.body).get("error")
        except (ValueError, AttributeError):
            message = None
        text = f"HTTP {answer.status}" + (f": {message}" if message else "")
        if answer.status == 403 and self.target.allowlist:
            text += " (WAF: is this machine outside ingress.access.allowed_cidrs?)"
        return text

    # -- per model -----------------------------------------------------------------------------

    def status_rest(self, model: ExpectedModel) -> None:
        if model.versions is None:
            path = f"/v1/models/{model.name}"
            check, expected = f"model {model.name}: status", f"AVAILABLE (newest {model.latest_count} served)"
            try:
                answer = self._rest(path)
            except CallError as exc:
                self._add(check, f"REST GET {path}", expected, str(exc), False)
                return
            available = self._available_rest(answer)
            got = (
                f"versions {', '.join(map(str, available))} AVAILABLE" if available
                else self._http_failure(answer) if answer.status != 200 else "no version AVAILABLE"
            )
            self._add(check, f"REST GET {path}", expected, got, bool(available))
            return
        for version in model.all_versions():
            path = f"/v1/models/{model.name}/versions/{version}"
            check = f"model {model.name}: version {version} status"
            try:
                answer = self._rest(path)
            except CallError as exc:
                self._add(check, f"REST GET {path}", "AVAILABLE", str(exc), False)
                continue
            states = self._states_rest(answer)
            got = (
                _state_name(states[version]) if version in states
                else self._http_failure(answer) if answer.status != 200 else f"version {version} not listed"
            )
            self._add(check, f"REST GET {path}", "AVAILABLE", got, states.get(version) == AVAILABLE)

    def _states_rest(self, answer: HttpAnswer) -> dict[int, int]:
        if answer.status != 200:
            return {}
        try:
            response = json_format.Parse(answer.body, get_model_status_pb2.GetModelStatusResponse(), ignore_unknown_fields=True)
        except json_format.ParseError:
            return {}
        return {s.version: s.state for s in response.model_version_status}

    def _available_rest(self, answer: HttpAnswer) -> list[int]:
        return sorted(v for v, s in self._states_rest(answer).items() if s == AVAILABLE)

    def status_grpc(self, model: ExpectedModel) -> None:
        call = "gRPC ModelService/GetModelStatus"
        versions: list[int | None] = list(model.all_versions()) if model.versions is not None else [None]
        for version in versions:
            canary = version is not None and version == model.canary_version
            spec = model_pb2.ModelSpec(name=model.name)
            if version is not None:
                spec.version.value = version
            check = f"model {model.name}: " + (f"version {version} status (gRPC)" if version else "status (gRPC)")
            where = f"{call} {model.name}" + (f" v{version}" if version else "") + (" (canary header)" if canary else "")
            expected = "AVAILABLE" if version else f"AVAILABLE (newest {model.latest_count} served)"
            try:
                response = self.grpc.call(
                    self.grpc.model.GetModelStatus,
                    get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                    self._metadata(canary),
                )
            except CallError as exc:
                self._add(check, where, expected, str(exc), False)
                continue
            except grpc.RpcError as exc:
                self._add(check, where, expected, _grpc_failure(exc), False)
                continue
            states = {s.version: s.state for s in response.model_version_status}
            if version is None:
                available = sorted(v for v, s in states.items() if s == AVAILABLE)
                got = f"versions {', '.join(map(str, available))} AVAILABLE" if available else "no version AVAILABLE"
                self._add(check, where, expected, got, bool(available))
            else:
                got = _state_name(states[version]) if version in states else f"version {version} not listed"
                self._add(check, where, expected, got, states.get(version) == AVAILABLE)

    def _rest_metadata(self, path: str) -> tuple[HttpAnswer, model_pb2.ModelSpec, get_model_metadata_pb2.SignatureDefMap] | None:
        """The metadata body as TF Serving writes it (http_rest_api_util.cc ToJsonString:
        `{"model_spec": ..., "metadata": {"signature_def": SignatureDefMap}}`), parsed."""
        answer = self._rest(path)
        if answer.status != 200:
            return None
        try:
            doc = json.loads(answer.body)
            spec = json_format.ParseDict(doc["model_spec"], model_pb2.ModelSpec(), ignore_unknown_fields=True)
            signatures = json_format.ParseDict(
                doc["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap(), ignore_unknown_fields=True
            )
        except (ValueError, KeyError, TypeError, json_format.ParseError):
            return None
        return answer, spec, signatures

    def metadata(self, model: ExpectedModel) -> get_model_metadata_pb2.SignatureDefMap | None:
        path = f"/v1/models/{model.name}/metadata"
        check = f"model {model.name}: metadata"
        signatures = None
        try:
            parsed = self._rest_metadata(path)
            if parsed is None:
                answer = self._rest(path)
                got = self._http_failure(answer) if answer.status != 200 else "not TF Serving's metadata JSON"
                self._add(check, f"REST GET {path}", "signature_def", got, False)
            else:
                _, spec, signatures = parsed
                names = ", ".join(sorted(signatures.signature_def)) or "none"
                self._add(
                    check, f"REST GET {path}", "signature_def", f"version {spec.version.value}: signatures {names}",
                    bool(signatures.signature_def),
                )
        except CallError as exc:
            self._add(check, f"REST GET {path}", "signature_def", str(exc), False)
        where = f"gRPC PredictionService/GetModelMetadata {model.name}"
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name=model.name), metadata_field=["signature_def"]
        )
        try:
            response = self.grpc.call(self.grpc.prediction.GetModelMetadata, request, self._metadata())
            grpc_signatures = get_model_metadata_pb2.SignatureDefMap()
            ok = "signature_def" in response.metadata and response.metadata["signature_def"].Unpack(grpc_signatures)
            names = ", ".join(sorted(grpc_signatures.signature_def)) or "none"
            self._add(
                f"{check} (gRPC)", where, "signature_def",
                f"version {response.model_spec.version.value}: signatures {names}", bool(ok and grpc_signatures.signature_def),
            )
        except CallError as exc:
            self._add(f"{check} (gRPC)", where, "signature_def", str(exc), False)
        except grpc.RpcError as exc:
            self._add(f"{check} (gRPC)", where, "signature_def", _grpc_failure(exc), False)
        return signatures

    def labels(self, model: ExpectedModel) -> None:
        for label, version in sorted(model.labels.items()):
            path = f"/v1/models/{model.name}/labels/{label}/metadata"
            check = f"model {model.name}: label {label}"
            expected = f"version {version}"
            try:
                parsed = self._rest_metadata(path)
                if parsed is None:
                    got = self._http_failure(self._rest(path))
                    self._add(check, f"REST GET {path}", expected, got, False)
                else:
                    served = parsed[1].version.value
                    self._add(check, f"REST GET {path}", expected, f"version {served}", served == version)
            except CallError as exc:
                self._add(check, f"REST GET {path}", expected, str(exc), False)
            canary = label == CANARY_LABEL
            where = f"gRPC PredictionService/GetModelMetadata {model.name} label {label}" + (
                " (canary header)" if canary else ""
            )
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name=model.name, version_label=label), metadata_field=["signature_def"]
            )
            try:
                response = self.grpc.call(self.grpc.prediction.GetModelMetadata, request, self._metadata(canary))
                served = response.model_spec.version.value
                self._add(f"{check} (gRPC)", where, expected, f"version {served}", served == version)
            except CallError as exc:
                self._add(f"{check} (gRPC)", where, expected, str(exc), False)
            except grpc.RpcError as exc:
                self._add(f"{check} (gRPC)", where, expected, _grpc_failure(exc), False)

    def predict(self, model: ExpectedModel, signatures: get_model_metadata_pb2.SignatureDefMap | None) -> None:
        path = f"/v1/models/{model.name}:predict"
        check = f"model {model.name}: prediction"
        source = str(example_file(model.name, self.examples_dir))
        try:
            example = read_example(model.name, self.examples_dir)
            if example is None:
                if signatures is None:
                    raise NoExample("no signature to derive an input from (metadata failed)")
                example = derived_example(model.name, signatures)
                source = "input derived from the signature"
        except NoExample as exc:
            self._add(check, f"REST POST {path}", "a prediction", f"no example input: {exc}; write {source}", False)
            return
        expected = f"a prediction ({source})"
        try:
            answer = self._rest(path, body=json.dumps(example).encode())
        except CallError as exc:
            self._add(check, f"REST POST {path}", expected, str(exc), False)
            return
        try:
            doc = json.loads(answer.body) if answer.status == 200 else None
        except ValueError:
            doc = None
        # json_tensor.cc: "predictions" (row format) or "outputs" (columnar).
        keys = sorted({"predictions", "outputs"} & set(doc)) if isinstance(doc, dict) else []
        if keys:
            got = f"HTTP 200, {keys[0]}"
        elif answer.status != 200:
            got = self._http_failure(answer)
        else:
            got = "HTTP 200 without predictions or outputs"
        self._add(check, f"REST POST {path}", expected, got, bool(keys))

    # -- what stays closed ---------------------------------------------------------------------

    def admin_closed(self) -> None:
        check, expected = "admin gRPC refused", "UNIMPLEMENTED (404 at the load balancer)"
        where = "gRPC ModelService/HandleReloadConfigRequest (empty config)"
        try:
            self.grpc.call(
                self.grpc.model.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(), self._metadata()
            )
            self._add(check, where, expected, "OK: the admin method is open", False)
        except CallError as exc:
            self._add(check, where, expected, str(exc), False)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            got = _grpc_failure(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                got += " (TF Serving answered: the admin method is open)"
            self._add(check, where, expected, got, code == grpc.StatusCode.UNIMPLEMENTED)

    def redirect(self, model: ExpectedModel) -> None:
        path = f"/v1/models/{model.name}"
        check, expected = "HTTP redirected to HTTPS", "301/302 to https://"
        where = f"GET {self.target.http_url}{path}"
        try:
            answer = self._rest(path, base=self.target.http_url)
        except CallError as exc:
            self._add(check, where, expected, str(exc), False)
            return
        location = answer.headers.get("location", "")
        ok = answer.status in REDIRECTS and location.startswith("https://")
        got = f"HTTP {answer.status}" + (f" to {location}" if location else "")
        self._add(check, where, expected, got, ok)

    def key_enforced(self, model: ExpectedModel) -> None:
        if self.target.api_key is None:
            return
        path = f"/v1/models/{model.name}"
        check, expected = "call without the API key refused", "HTTP 403 (WAF)"
        try:
            answer = self._rest(path, key=False)
            self._add(check, f"REST GET {path} without {self.target.api_key_header}", expected,
                      f"HTTP {answer.status}", answer.status in (401, 403))
        except CallError as exc:
            self._add(check, f"REST GET {path} without {self.target.api_key_header}", expected, str(exc), False)
        where = f"gRPC ModelService/GetModelStatus {model.name} without {self.target.api_key_header}"
        expected = "PERMISSION_DENIED (HTTP 403 from the WAF)"
        refused = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        try:
            self.grpc.call(
                self.grpc.model.GetModelStatus,
                get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=model.name)),
                self._metadata(key=False),
            )
            self._add(f"{check} (gRPC)", where, expected, "OK: answered without the key", False)
        except CallError as exc:
            self._add(f"{check} (gRPC)", where, expected, str(exc), False)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            self._add(f"{check} (gRPC)", where, expected, _grpc_failure(exc), code in refused)

    def run(self) -> list[Result]:
        try:
            for model in self.target.models:
                self.status_rest(model)
                self.status_grpc(model)
                signatures = self.metadata(model)
                self.labels(model)
                self.predict(model, signatures)
            first = self.target.models[0]
            self.admin_closed()
            self.redirect(first)
            self.key_enforced(first)
            if self.target.allowlist:
                self.results.append(Result(
                    "allowlist", "-", "calls from outside ingress.access.allowed_cidrs refused",
                    "can't be confirmed from here: this machine's calls are judged as its own address", "note",
                ))
        finally:
            self.grpc.close()
        return self.results


COLUMNS = ("check", "call", "expected", "got", "verdict")


def table(results: list[Result]) -> str:
    """One row per check, failures first; a summary line last."""
    order = {"fail": 0, "pass": 1, "note": 2}
    rows = [dict(zip(COLUMNS, COLUMNS))] + [r.as_dict() for r in sorted(results, key=lambda r: order[r.verdict])]
    widths = {c: max(len(r[c]) for r in rows) for c in COLUMNS[:-1]}
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join([row[c].ljust(widths[c]) for c in COLUMNS[:-1]] + [row["verdict"]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * widths[c] for c in COLUMNS[:-1]) + "  -------")
    failed = sum(r.verdict == "fail" for r in results)
    passed = sum(r.verdict == "pass" for r in results)
    lines.append(f"\n{passed} passed, {failed} failed")
    return "\n".join(lines)


def exit_status(results: list[Result]) -> int:
    return 1 if any(r.verdict == "fail" for r in results) else 0


def as_json(results: list[Result]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=2)

