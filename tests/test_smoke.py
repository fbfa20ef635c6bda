"""The smoke test (`python -m tools.smoke`) run end to end against a stand-in TF Serving on
loopback (tests/support/standin_tfs.py: TF Serving's REST and gRPC answers, TLS on, the load
balancer's refusals): it passes a healthy stack and reports each failure it exists to find.

Every call stays on 127.0.0.1; it must not reach the network or need the pulumi CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support.standin_tfs import HOST, Model, Settings, StandinTfs, Tls, self_signed_certificate
from tools.lib.stackfile import ROOT
from tools.smoke.__main__ import main
from tools.smoke.target import API_KEY_ENV

KEY = "k3y-for-the-smoke-test-0123456789"
STACK = "smoke"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def healthy_models() -> dict[str, Model]:
    return {
        # policy specific with labels and a canary (version 5, label canary on the canary pods)
        "resnet": Model(versions={3: "AVAILABLE", 4: "AVAILABLE", 5: "AVAILABLE"}, labels={"stable": 4, "previous": 3, "canary": 5}),
        # policy latest
        "half-plus-two": Model(versions={1: "AVAILABLE", 2: "AVAILABLE"}),
    }


def write_stack(directory: Path, *, require_key: bool = True, allowlist: bool = False) -> Path:
    """The dev stack file, serving the stand-in's two models, with the access settings given."""
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    config = document["config"]
    config["tf-serving-eks:serving"]["models"] = {
        "resnet": {
            "version_policy": "specific", "versions": [3, 4], "labels": {"stable": 4, "previous": 3},
            "canary": {"version": 5, "weight": 10},
        },
        "half-plus-two": {"version_policy": "latest", "latest_count": 2},
    }
    access: dict[str, Any] = {"rate_limit": 1000}
    if allowlist:
        access["allowed_cidrs"] = ["203.0.113.0/24"]
    if require_key:
        access["require_api_key"] = True
        config["tf-serving-eks:ingress_api_key"] = {"secure": "v1:placeholder"}
    if not (allowlist or require_key):
        access["public"] = True
    config["tf-serving-eks:ingress"]["access"] = access
    path = directory / f"Pulumi.{STACK}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def settings() -> Settings:
    return Settings(models=healthy_models(), api_key=KEY)


@pytest.fixture
def standin(settings: Settings, tls: Tls) -> Iterator[StandinTfs]:
    with StandinTfs(settings, tls) as server:
        yield server


@pytest.fixture(autouse=True)
def api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pulumi CLI, whatever the machine has


def outputs_file(directory: Path, server: StandinTfs) -> Path:
    path = directory / "outputs.json"
    path.write_text(json.dumps({"rest_url": server.rest_url, "grpc_url": server.grpc_target, "region": "eu-west-1"}))
    return path


def smoke(
    tmp_path: Path, server: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str], *extra: str,
    stack_file: Path | None = None, examples: Path | None = None,
) -> tuple[int, list[dict[str, str]], str]:
    """Run the command in-process with --json: exit status, results, stderr."""
    stack_file = stack_file or write_stack(tmp_path)
    code = main([
        "--stack", STACK, "--stack-file", str(stack_file), "--outputs", str(outputs_file(tmp_path, server)),
        "--ca-file", str(tls.ca), "--http-url", server.http_url, "--timeout", "5",
        "--examples", str(examples or tmp_path / "models"), "--json", *extra,
    ])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else [], err


def verdicts(results: list[dict[str, str]]) -> dict[str, str]:
    return {r["check"]: r["verdict"] for r in results}


def row(results: list[dict[str, str]], check: str) -> dict[str, str]:
    matching = [r for r in results if r["check"] == check]
    assert len(matching) == 1, f"{check!r} not (once) in {[r['check'] for r in results]}"
    return matching[0]


def failed(results: list[dict[str, str]]) -> set[str]:
    return {r["check"] for r in results if r["verdict"] == "fail"}


def test_a_healthy_stack_passes_every_check(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    code, results, err = smoke(tmp_path, standin, tls, capsys)
    assert (code, failed(results)) == (0, set()), err
    expected = {
        *(f"model resnet: version {v} status" for v in (3, 4, 5)),
        *(f"model resnet: version {v} status (gRPC)" for v in (3, 4, 5)),
        "model half-plus-two: status", "model half-plus-two: status (gRPC)",
        *(f"model {m}: metadata" for m in ("resnet", "half-plus-two")),
        *(f"model {m}: metadata (gRPC)" for m in ("resnet", "half-plus-two")),
        *(f"model resnet: label {label}" for label in ("stable", "previous", "canary")),
        *(f"model resnet: label {label} (gRPC)" for label in ("stable", "previous", "canary")),
        *(f"model {m}: prediction" for m in ("resnet", "half-plus-two")),
        "admin gRPC refused", "HTTP redirected to HTTPS",
        "call without the API key refused", "call without the API key refused (gRPC)",
    }
    assert verdicts(results) == dict.fromkeys(expected, "pass")
    # The canary's version and label went to the canary pods: the gRPC calls for them carried
    # the canary header (components/ingress.py routes on it), the others did not.
    grpc_calls = standin.calls_to("grpc")
    with_header = [c for c in grpc_calls if c.headers.get("x-tf-serving-track") == "canary"]
    assert len(with_header) == 2  # status of version 5, metadata by label canary
    # Everything it called was the stand-in, over TLS for REST.
    assert {c.protocol for c in standin.calls} == {"https", "http", "grpc"}
    assert [c.path for c in standin.calls_to("http")] == ["/v1/models/half-plus-two"]  # the first model


def test_grpc_calls_carry_the_api_key_and_only_the_key_check_omits_it(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 0
    without = [c for c in standin.calls if c.protocol in ("https", "grpc") and c.headers.get("x-api-key") != KEY]
    assert [(c.protocol, c.path) for c in without] == [
        ("https", "/v1/models/half-plus-two"),
        ("grpc", "/tensorflow.serving.ModelService/GetModelStatus"),
    ]


def test_the_command_prints_a_table_and_exits_0_when_run_as_a_person_runs_it(
    tmp_path: Path, standin: StandinTfs, tls: Tls
) -> None:
    stack_file = write_stack(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tools.smoke", "--stack", STACK, "--stack-file", str(stack_file),
         "--outputs", str(outputs_file(tmp_path, standin)), "--ca-file", str(tls.ca), "--http-url", standin.http_url,
         "--examples", str(tmp_path / "models")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", API_KEY_ENV: KEY},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["check", "call", "expected", "got", "verdict"]
    assert lines[-1] == "24 passed, 0 failed"
    assert "Traceback" not in done.stderr


def test_a_missing_model_fails_its_status_checks(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    del settings.models["half-plus-two"]
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert {
        "model half-plus-two: status", "model half-plus-two: status (gRPC)", "model half-plus-two: metadata",
        "model half-plus-two: metadata (gRPC)", "model half-plus-two: prediction",
    } == failed(results)
    assert row(results, "model half-plus-two: status")["got"] == "HTTP 404: Could not find any versions of model half-plus-two"
    assert row(results, "model half-plus-two: status (gRPC)")["got"] == (
        "NOT_FOUND: Could not find any versions of model half-plus-two"
    )


@pytest.mark.parametrize("state", ["LOADING", "UNLOADING", "END"])
def test_a_version_not_available_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str], state: str
) -> None:
    settings.models["resnet"].versions[3] = state
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert {"model resnet: version 3 status", "model resnet: version 3 status (gRPC)"} <= failed(results)
    assert row(results, "model resnet: version 3 status")["got"] == state
    assert row(results, "model resnet: version 3 status (gRPC)")["got"] == state


def test_a_version_the_server_does_not_know_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    del settings.models["resnet"].versions[5]  # the canary pods lack the canary version
    settings.models["resnet"].labels.pop("canary")
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert row(results, "model resnet: version 5 status")["got"] == "HTTP 404: Could not find version 5 of model resnet"
    assert row(results, "model resnet: label canary")["got"] == "HTTP 400: Unrecognized servable version label: canary"
    assert row(results, "model resnet: label canary (gRPC)")["got"] == (
        "INVALID_ARGUMENT: Unrecognized servable version label: canary"
    )


def test_a_label_on_the_wrong_version_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.models["resnet"].labels["stable"] = 3
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"model resnet: label stable", "model resnet: label stable (gRPC)"}
    assert row(results, "model resnet: label stable") | {"call": ""} == {
        "check": "model resnet: label stable", "call": "", "expected": "version 4", "got": "version 3", "verdict": "fail",
    }


def test_a_prediction_error_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.models["resnet"].predict_error = (grpc.StatusCode.FAILED_PRECONDITION, "Could not run the graph")
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"model resnet: prediction"}
    assert row(results, "model resnet: prediction")["got"] == "HTTP 400: Could not run the graph"


def test_an_open_admin_method_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.refuse_admin = False
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"admin gRPC refused"}
    assert row(results, "admin gRPC refused")["got"].startswith("INVALID_ARGUMENT: ServerModelConfig type not supported")
    # The call it sent could change nothing: TF Serving refuses an empty config.
    assert standin.reloaded == []


def test_plain_http_not_redirected_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.redirect_http = False
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"HTTP redirected to HTTPS"}
    assert row(results, "HTTP redirected to HTTPS")["got"] == "HTTP 200"


def test_an_api_key_not_enforced_fails(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.enforce_api_key = False
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"call without the API key refused", "call without the API key refused (gRPC)"}
    assert row(results, "call without the API key refused")["got"] == "HTTP 200"


def test_a_wrong_api_key_fails_every_call_with_the_waf_answer(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "not-the-key-not-the-key-0000")
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert row(results, "model resnet: version 3 status")["got"] == "HTTP 403"
    assert row(results, "model resnet: version 3 status (gRPC)")["got"].startswith("PERMISSION_DENIED")


def test_with_an_allowlist_it_says_what_it_cannot_confirm_and_hints_at_403(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str],
) -> None:
    code, results, _ = smoke(tmp_path, standin, tls, capsys, stack_file=write_stack(tmp_path, allowlist=True))
    assert code == 0
    assert row(results, "allowlist")["verdict"] == "note"
    assert "can't be confirmed from here" in row(results, "allowlist")["got"]
    settings.api_key = "another-key-another-key-000"  # every call now gets the WAF's 403
    code, results, _ = smoke(tmp_path, standin, tls, capsys, stack_file=write_stack(tmp_path, allowlist=True))
    assert code == 1
    assert "outside ingress.access.allowed_cidrs" in row(results, "model resnet: version 3 status")["got"]


def test_without_a_key_required_no_key_check_runs(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.api_key = None
    monkeypatch.delenv(API_KEY_ENV)
    code, results, _ = smoke(tmp_path, standin, tls, capsys, stack_file=write_stack(tmp_path, require_key=False))
    assert (code, failed(results)) == (0, set())
    assert not [r for r in results if "API key" in r["check"]]


def test_timeouts_fail_each_call_in_one_line(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.latency_seconds = 0.6
    settings.models = {"resnet": healthy_models()["resnet"]}
    stack_file = write_stack(tmp_path)
    document = yaml.safe_load(stack_file.read_text())
    del document["config"]["tf-serving-eks:serving"]["models"]["half-plus-two"]
    stack_file.write_text(yaml.safe_dump(document))
    code, results, err = smoke(tmp_path, standin, tls, capsys, "--timeout", "0.3", stack_file=stack_file)
    assert code == 1
    assert results and all(r["verdict"] == "fail" for r in results)
    rest = row(results, "model resnet: version 3 status")["got"]
    assert rest.endswith("timed out after 0.3 s") and "\n" not in rest
    assert row(results, "model resnet: version 3 status (gRPC)")["got"] == f"gRPC {standin.grpc_target}: timed out after 0.3 s"
    assert "Traceback" not in err


def test_connection_refused_fails_each_call_in_one_line(
    tmp_path: Path, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    with StandinTfs(Settings(models=healthy_models(), api_key=KEY), tls) as gone:
        pass  # its ports are closed now
    code, results, err = smoke(tmp_path, gone, tls, capsys)
    assert code == 1
    assert results and all(r["verdict"] == "fail" for r in results)
    assert row(results, "model resnet: version 3 status")["got"].endswith(": connection refused")
    assert row(results, "model resnet: version 3 status (gRPC)")["got"].startswith(f"gRPC {HOST}:")
    assert "Traceback" not in err


def test_an_untrusted_certificate_fails_without_a_traceback(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    other = self_signed_certificate(tmp_path)  # not the stand-in's
    code, results, err = smoke(tmp_path, standin, other, capsys)
    assert code == 1
    assert "TLS certificate not trusted" in row(results, "model resnet: version 3 status")["got"]
    assert "Traceback" not in err


def test_the_example_file_is_sent_as_the_prediction_request(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"signature_name": "serving_default", "instances": [[1.0, 2.0, 5.0]]}
    (tmp_path / "models" / "resnet").mkdir(parents=True)
    (tmp_path / "models" / "resnet" / "smoke.json").write_text(json.dumps(body))
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 0
    assert str(tmp_path / "models" / "resnet" / "smoke.json") in row(results, "model resnet: prediction")["expected"]
    sent = [c.body for c in standin.calls_to("https") if c.path == "/v1/models/resnet:predict"]
    assert [json.loads(b) for b in sent] == [body]
    # half-plus-two has no file: its input came from its signature (x: DT_FLOAT [-1, 3]).
    sent = [c.body for c in standin.calls_to("https") if c.path == "/v1/models/half-plus-two:predict"]
    assert [json.loads(b) for b in sent] == [{"signature_name": "serving_default", "inputs": {"x": [[0.0, 0.0, 0.0]]}}]


def test_an_example_file_the_model_refuses_fails_the_prediction(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models" / "resnet").mkdir(parents=True)
    (tmp_path / "models" / "resnet" / "smoke.json").write_text(json.dumps({"instances": [{"z": [1]}]}))
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    assert failed(results) == {"model resnet: prediction"}
    assert row(results, "model resnet: prediction")["got"].startswith("HTTP 400")


@pytest.mark.parametrize(
    ("inputs", "why"),
    [
        ({"images": ("DT_STRING", [-1, -1])}, "has shape [-1, -1]"),
        ({"x": ("DT_RESOURCE", [1])}, "is DT_RESOURCE: no default value"),
    ],
)
def test_no_example_and_no_usable_signature_fails_and_names_the_file_to_write(
    tmp_path: Path, settings: Settings, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str],
    inputs: dict[str, tuple[str, list[int]]], why: str,
) -> None:
    settings.models["resnet"].inputs = inputs
    code, results, _ = smoke(tmp_path, standin, tls, capsys)
    assert code == 1
    got = row(results, "model resnet: prediction")["got"]
    assert why in got and got.endswith(f"write {tmp_path / 'models' / 'resnet' / 'smoke.json'}")
    assert not [c for c in standin.calls if c.path == "/v1/models/resnet:predict"]


def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, standin: StandinTfs, tls: Tls, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_file = write_stack(tmp_path)
    base = ["--stack", STACK, "--stack-file", str(stack_file), "--ca-file", str(tls.ca)]

    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
        return err

    # No pulumi CLI on PATH and no --outputs.
    assert "pass them with --outputs FILE" in error(base)
    (tmp_path / "bad.json").write_text("{not json")
    assert "is not JSON" in error([*base, "--outputs", str(tmp_path / "bad.json")])
    (tmp_path / "empty.json").write_text(json.dumps({"region": "eu-west-1"}))
    assert "output 'rest_url' is missing" in error([*base, "--outputs", str(tmp_path / "empty.json")])
    monkeypatch.delenv(API_KEY_ENV)
    assert f"set {API_KEY_ENV}" in error([*base, "--outputs", str(outputs_file(tmp_path, standin))])
    assert "is not a stack name" in error(["--stack", "../x"])
    assert "--timeout must be more than 0" in error([*base, "--timeout", "0"])
    assert standin.calls == []


def test_tensorflow_here_is_only_its_generated_messages() -> None:
    """The virtual environment's `tensorflow` holds TensorFlow's `*_pb2` modules the stubs
    import (tools/tf_protos.py), not the framework: no `__init__`, nothing but gencode."""
    import tensorflow
    from tensorflow.core.framework import tensor_pb2

    assert getattr(tensorflow, "__file__", None) is None  # a namespace package
    assert not hasattr(tensorflow, "constant")
    root = Path(next(iter(tensorflow.__path__)))
    assert Path(tensor_pb2.__file__).is_relative_to(root)
    assert {p.name for p in root.rglob("*.py") if not p.name.endswith("_pb2.py")} == set()


def test_the_extraction_takes_exactly_what_is_imported_and_refuses_a_missing_module(tmp_path: Path) -> None:
    import zipfile

    from tools.tf_protos import extract

    gencode = {
        "tensorflow/core/framework/a_pb2.py": "from tensorflow.core.framework import b_pb2 as x\n",
        "tensorflow/core/framework/b_pb2.py": "from tensorflow.tsl.protobuf import c_pb2 as y\n",
        "tensorflow/tsl/protobuf/c_pb2.py": "\n",
        "tensorflow/core/framework/unused_pb2.py": "\n",
        "tensorflow/__init__.py": "import the_framework\n",
    }
    wheel = tmp_path / "tf.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in gencode.items():
            archive.writestr(name, text)
    importer = tmp_path / "serving_pb2.py"
    importer.write_text("from tensorflow.core.framework import a_pb2 as z\n")
    dest = tmp_path / "out"
    assert extract(wheel, dest, [importer]) == sorted(
        ["tensorflow/core/framework/a_pb2.py", "tensorflow/core/framework/b_pb2.py", "tensorflow/tsl/protobuf/c_pb2.py"]
    )
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.py")) == sorted(
        ["tensorflow/core/framework/a_pb2.py", "tensorflow/core/framework/b_pb2.py", "tensorflow/tsl/protobuf/c_pb2.py"]
    )
    importer.write_text("from tensorflow.core.framework import missing_pb2 as z\n")
    with pytest.raises(KeyError, match="tensorflow/core/framework/missing_pb2.py"):
        extract(wheel, tmp_path / "out2", [importer])


def test_the_standin_answers_grpc_predict_as_tf_serving_resolves_versions(standin: StandinTfs, tls: Tls) -> None:
    """The gRPC prediction path the smoke test leaves to REST (the load test uses it)."""
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 5.0])
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=3)
    with grpc.secure_channel(standin.grpc_target, grpc.ssl_channel_credentials(tls.ca.read_bytes())) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest(model_spec={"name": "resnet", "version_label": "stable"}, inputs={"x": tensor})
        response = stub.Predict(request, timeout=5, metadata=[("x-api-key", KEY)])
        assert (response.model_spec.version.value, list(response.outputs["y"].float_val)) == (4, [1.0, 2.0, 5.0])
        request = predict_pb2.PredictRequest(model_spec={"name": "resnet", "version": {"value": 9}}, inputs={"x": tensor})
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=5, metadata=[("x-api-key", KEY)])
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "Servable not found for request: Specific(resnet, 9)"
