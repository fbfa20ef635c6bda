"""TF Serving warm-up requests for a SavedModel version, made from JSON lines examples.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow.serving.PredictionLog`) when it loads a version, before the version is AVAILABLE,
so that lazy initialisation (graph optimisation, XLA compilation, GPU kernel selection) is not
paid by the first real request. It is strict about that file, and a file it refuses fails the
whole version's load (tensorflow/serving 2.19.1, tensorflow_serving/servables/tensorflow/
saved_model_warmup_util.cc, RunSavedModelWarmupUntracked, called by
saved_model_bundle_source_adapter.cc whenever --enable_model_warmup is on):

- at most `MAX_RECORDS` records (WarmupConsts::kMaxNumRecords in saved_model_warmup_util.h);
  one more and the load fails;
- every record must parse as a PredictionLog, and every request must run: an unknown
  signature, a missing or extra input or a tensor the graph refuses fails the load
  (saved_model_warmup.cc, RunWarmupRequest -> predict_util.cc, RunPredict);
- a CRC mismatch or a truncated record is DataLoss, and fails the load too.

So every example is checked here against the version's own serving signatures before
anything is uploaded.

The examples file is JSON lines: one TF Serving REST predict request body per line,
`{"instances": [...]}` (row format) or `{"inputs": ...}` (columnar format), optionally with
`"signature_name"` (default `serving_default`). That is the body a client POSTs to
`/v1/models/<model>:predict`, so a request that works there works as a warm-up request,
and a line number points at one request. Its tensors are built as TF Serving's REST API
builds them (tensorflow_serving/util/json_tensor.cc, FillPredictRequestFromJson): the
dtype comes from the signature, the shape from the nesting of the lists, instances are
stacked along a new first dimension, and binary strings are `{"b64": "..."}`. Then the
shape must fit the signature's (a -1 dimension takes any size) and every value its dtype.

It owns the examples' format, their checking and the records they become; it must not
upload (tools/lib/model_repository.py) nor frame records (tools/lib/tfrecord.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tools.lib.tfrecord import tfrecord_file

# saved_model_warmup_util.h (WarmupConsts) and tensorflow/cc/saved_model/constants.h
# (kSavedModelAssetsExtraDirectory).
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_RECORDS = 1000
# TF Serving loads the meta graph tagged `serve` (model_servers/server.cc: --saved_model_tags
# defaults to kSavedModelTagServe), and a request without a signature name asks for
# `serving_default` (predict_util.cc, kDefaultServingSignatureDefKey).
SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
_MAX_LISTED = 20

# What a JSON value may become, per dtype, exactly the dtypes TF Serving's REST API converts
# (json_tensor.cc, AddValueToTensor); any other dtype has no JSON form there. Integers must be
# JSON integers; the ranges are the dtype's own (REST only checks int32 for the small types,
# and the graph would then wrap the value silently).
_INT_RANGES: Mapping[str, tuple[int, int]] = {
    "DT_INT8": (-(2**7), 2**7 - 1),
    "DT_UINT8": (0, 2**8 - 1),
    "DT_INT16": (-(2**15), 2**15 - 1),
    "DT_INT32": (-(2**31), 2**31 - 1),
    "DT_INT64": (-(2**63), 2**63 - 1),
    "DT_UINT32": (0, 2**32 - 1),
    "DT_UINT64": (0, 2**64 - 1),
}
_FLOATS = {"DT_FLOAT", "DT_DOUBLE"}
_FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
# The TensorProto field each dtype's values go in (tensorflow/core/framework/tensor.proto).
_VALUE_FIELD: Mapping[str, str] = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT8": "int_val",
    "DT_UINT8": "int_val",
    "DT_INT16": "int_val",
    "DT_INT32": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
}
_REQUEST_KEYS = ("inputs", "instances", "signature_name")

Value = float | int | bool | bytes
T = TypeVar("T")


class WarmupError(Exception):
    """The examples can't become warm-up requests; `problems` names each file line and rule."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        if len(self.problems) > len(shown):
            shown.append(f"... and {len(self.problems) - len(shown)} more")
        super().__init__("\n  - ".join([message, *shown]))


@dataclass(frozen=True)
class InputSpec:
    """One signature input: its dtype (a DataType name, e.g. DT_FLOAT) and its shape
    (None: any rank; -1: a dimension of any size)."""

    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True)
class WarmupRequest:
    line: int
    signature_name: str
    inputs: Mapping[str, Tensor]


Signatures = Mapping[str, Mapping[str, InputSpec]]


class _Refused(Exception):
    """One example broke one rule; the message says which (the line is added by the caller)."""


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shape_text(shape: Sequence[int] | None) -> str:
    return "any shape" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


# --- JSON values to tensors, as json_tensor.cc does it ------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _convert(value: Any, dtype: str) -> Value:
    if dtype == "DT_STRING":
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            try:
                # absl::Base64Unescape accepts the standard alphabet, with or without padding.
                return base64.b64decode(value["b64"] + "=" * (-len(value["b64"]) % 4), validate=True)
            except binascii.Error:
                raise _Refused(f"{_short(value)} is not valid base64") from None
        raise _Refused(f"{_short(value)} is not a string (or {{\"b64\": ...}}) for DT_STRING")
    if dtype == "DT_BOOL":
        if isinstance(value, bool):
            return value
        raise _Refused(f"{_short(value)} is not true or false for DT_BOOL")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(f"{_short(value)} is not a number for {dtype}")
    if dtype in _FLOATS:
        number = float(value)
        if dtype == "DT_FLOAT" and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
            raise _Refused(f"{_short(value)} is out of range for DT_FLOAT (float32)")
        return number
    low, high = _INT_RANGES[dtype]
    if not isinstance(value, int):
        raise _Refused(f"{_short(value)} is not a whole number (JSON integer) for {dtype}")
    if not low <= value <= high:
        raise _Refused(f"{value} is out of range for {dtype} ({low} to {high})")
    return value


def _dense(value: Any, dtype: str) -> Tensor:
    """A JSON value as a dense tensor: the shape follows the first element at each depth, and
    every list at a depth must have that size and every leaf sit at the same depth."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    values: list[Value] = []

    def fill(item: Any, depth: int) -> None:
        if not isinstance(item, list):
            if depth != len(shape):
                raise _Refused(
                    f"{_short(item)} is at depth {depth} of the nested lists, where the first "
                    f"value is at depth {len(shape)}: a tensor's lists must be regular"
                )
            values.append(_convert(item, dtype))
            return
        if depth >= len(shape) or len(item) != shape[depth]:
            raise _Refused(
                f"a list of {len(item)} at depth {depth} where the first has "
                f"{shape[depth] if depth < len(shape) else 'no list'}: a tensor's lists must be "
                "regular"
            )
        for element in item:
            fill(element, depth + 1)

    fill(value, 0)
    return Tensor(dtype=dtype, shape=tuple(shape), values=tuple(values))


def _in_input(name: str, value: Any, spec: InputSpec) -> Tensor:
    if spec.dtype not in _VALUE_FIELD:
        raise _Refused(
            f"input {name!r} has dtype {spec.dtype}, which TF Serving's REST API (and so "
            "this format) has no JSON form for"
        )
    try:
        return _dense(value, spec.dtype)
    except _Refused as exc:
        raise _Refused(f"input {name!r}: {exc}") from None


def _from_instances(instances: Any, inputs: Mapping[str, InputSpec]) -> dict[str, Tensor]:
    # json_tensor.cc, FillTensorMapFromInstancesList.
    if not isinstance(instances, list) or not instances:
        raise _Refused('"instances" must be a non-empty list')
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    names = sorted(inputs)
    if not named and len(names) > 1:
        raise _Refused(
            '"instances" is a plain list, but the signature has several inputs '
            f"({', '.join(names)}): each instance must be an object with those keys"
        )
    rows: dict[str, list[Tensor]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        where = f"instance {index}"
        if named:
            if not isinstance(instance, dict) or _is_b64(instance):
                raise _Refused(f"{where} is not an object like instance 0")
            _check_names(set(instance), inputs, where)
            items = instance.items()
        else:
            if isinstance(instance, dict) and not _is_b64(instance):
                raise _Refused(f"{where} is an object, but instance 0 is not")
            items = {names[0]: instance}.items()
        for name, value in items:
            tensor = _in_input(name, value, inputs[name])
            if rows[name] and rows[name][0].shape != tensor.shape:
                raise _Refused(
                    f"input {name!r}: {where} has shape {_shape_text(tensor.shape)}, instance 0 "
                    f"{_shape_text(rows[name][0].shape)}: instances are stacked into one tensor"
                )
            rows[name].append(tensor)
    return {
        name: Tensor(
            dtype=inputs[name].dtype,
            shape=(len(instances), *tensors[0].shape),
            values=tuple(v for t in tensors for v in t.values),
        )
        for name, tensors in rows.items()
    }


def _from_inputs(columns: Any, inputs: Mapping[str, InputSpec]) -> dict[str, Tensor]:
    # json_tensor.cc, FillTensorMapFromInputsMap.
    names = sorted(inputs)
    if not isinstance(columns, dict) or _is_b64(columns):
        if len(names) > 1:
            raise _Refused(
                '"inputs" is a plain value or list, but the signature has several inputs '
                f"({', '.join(names)}): give an object with those keys"
            )
        return {names[0]: _in_input(names[0], columns, inputs[names[0]])}
    _check_names(set(columns), inputs, '"inputs"')
    return {name: _in_input(name, columns[name], inputs[name]) for name in names}


def _check_names(given: set[str], inputs: Mapping[str, InputSpec], where: str) -> None:
    # TF Serving's REST API wants every input, and RunPredict refuses extra ones
    # (predict_util.cc, VerifyRequestInputsSize).
    unknown = sorted(given - set(inputs))
    missing = sorted(set(inputs) - given)
    if unknown:
        raise _Refused(
            f"input {unknown[0]!r} ({where}) is not an input of the signature "
            f"(inputs: {', '.join(sorted(inputs))})"
        )
    if missing:
        raise _Refused(f"input {missing[0]!r} is missing from {where}; the signature needs it")


def _fits(shape: tuple[int, ...], spec: InputSpec) -> bool:
    if spec.shape is None:
        return True
    return len(shape) == len(spec.shape) and all(
        want == -1 or want == got for got, want in zip(shape, spec.shape)
    )


def _request(line: str, signatures: Signatures) -> tuple[str, dict[str, Tensor]]:
    try:
        body = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _Refused(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(body, dict):
        raise _Refused('a request must be a JSON object with "instances" or "inputs"')
    unknown = sorted(set(body) - set(_REQUEST_KEYS))
    if unknown:
        raise _Refused(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(_REQUEST_KEYS)}")
    signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise _Refused(f'"signature_name" must be a string (got {_short(signature_name)})')
    if signature_name not in signatures:
        raise _Refused(
            f"signature {signature_name!r} is not in the SavedModel's {SERVE_TAG!r} graph "
            f"(signatures: {', '.join(sorted(signatures)) or 'none'})"
        )
    inputs = signatures[signature_name]
    if not inputs:
        raise _Refused(f"signature {signature_name!r} has no inputs to send")
    if ("instances" in body) == ("inputs" in body):
        raise _Refused('a request needs exactly one of "instances" and "inputs"')
    if "instances" in body:
        tensors = _from_instances(body["instances"], inputs)
    else:
        tensors = _from_inputs(body["inputs"], inputs)
    for name, tensor in tensors.items():
        spec = inputs[name]
        if not _fits(tensor.shape, spec):
            raise _Refused(
                f"input {name!r}: shape {_shape_text(tensor.shape)} does not fit the "
                f"signature's {_shape_text(spec.shape)} (-1: any size)"
            )
    return signature_name, tensors


def _checked(
    path: Path, signatures: Signatures, keep: Callable[[WarmupRequest], T]
) -> list[T]:
    """`keep` of every request in the JSON lines file at `path` (blank lines skipped), each
    checked against `signatures` as it is read (so only what `keep` returns is held);
    WarmupError names each bad line, its input and the rule."""
    kept: list[T] = []
    problems: list[str] = []
    count = 0
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                count += 1
                if count > MAX_RECORDS:
                    continue  # counted, for the message below, but not worth checking
                try:
                    signature_name, tensors = _request(line, signatures)
                except _Refused as exc:
                    problems.append(f"{path} line {number}: {exc}")
                    continue
                kept.append(keep(WarmupRequest(number, signature_name, tensors)))
    except (OSError, UnicodeDecodeError) as exc:
        raise WarmupError(f"--warmup-examples {path}: cannot read it: {exc}") from None
    if count > MAX_RECORDS:
        problems.insert(
            0,
            f"{path} holds {count} requests; TF Serving replays at most {MAX_RECORDS} and "
            "fails to load the version past that (saved_model_warmup_util.h, kMaxNumRecords)",
        )
    if not count:
        problems.append(f"{path} holds no request (one JSON object a line)")
    if problems:
        raise WarmupError(f"--warmup-examples {path}: not usable as warm-up requests:", problems)
    return kept


def parse_examples(path: Path, signatures: Signatures) -> list[WarmupRequest]:
    """Every request in the JSON lines file at `path` (blank lines skipped), each checked
    against `signatures`; WarmupError names each bad line, its input and the rule."""
    return _checked(path, signatures, lambda request: request)


# --- protobuf: the SavedModel's signatures in, PredictionLog records out -------------------


def _protos() -> tuple[Any, Any, Any]:
    """TensorFlow's DataType and SavedModel messages and TF Serving's PredictionLog, imported
    when first needed: the examples' checks above need none of them."""
    try:
        from tensorflow.core.framework import types_pb2
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError as exc:  # pragma: no cover - the message says how to fix it
        raise WarmupError(
            f"TensorFlow's and TF Serving's generated protobuf modules are missing ({exc}); "
            "`make` installs them into .venv"
        ) from None
    return types_pb2, saved_model_pb2, prediction_log_pb2


def serving_signatures(saved_model_dir: Path) -> dict[str, dict[str, InputSpec]]:
    """The signatures of the meta graph TF Serving loads (tags exactly {serve}: TensorFlow's
    loader picks the meta graph whose tag set equals the one asked for, tensorflow/cc/
    saved_model/reader.cc FindMetaGraphDef), with each input's dtype and shape."""
    from google.protobuf import message, text_format

    types, saved_model_pb2, _ = _protos()
    saved = saved_model_pb2.SavedModel()
    binary = saved_model_dir / "saved_model.pb"
    try:
        if binary.is_file():
            saved.ParseFromString(binary.read_bytes())
            source = binary
        else:
            source = saved_model_dir / "saved_model.pbtxt"
            text_format.Parse(source.read_text(encoding="utf-8"), saved)
    except (OSError, UnicodeDecodeError, message.DecodeError, text_format.ParseError) as exc:
        raise WarmupError(f"{saved_model_dir}: cannot read its SavedModel: {exc}") from None
    graphs = [g for g in saved.meta_graphs if set(g.meta_info_def.tags) == {SERVE_TAG}]
    if not graphs:
        found = "; ".join(",".join(g.meta_info_def.tags) or "(none)" for g in saved.meta_graphs)
        raise WarmupError(
            f"{source}: no meta graph tagged exactly {SERVE_TAG!r}, the one TF Serving loads "
            f"(tags found: {found or 'no meta graph'})"
        )
    signatures: dict[str, dict[str, InputSpec]] = {}
    for name, signature in graphs[0].signature_def.items():
        inputs: dict[str, InputSpec] = {}
        for alias, info in signature.inputs.items():
            shape = info.tensor_shape
            dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
            inputs[alias] = InputSpec(dtype=types.DataType.Name(info.dtype), shape=dims)
        signatures[name] = inputs
    return signatures


def prediction_log(request: WarmupRequest, model: str) -> bytes:
    """A request as a serialized PredictionLog whose predict_log.request names the model and
    the signature, with its inputs as TensorProtos."""
    types, _, prediction_log_pb2 = _protos()
    log = prediction_log_pb2.PredictionLog()
    predict = log.predict_log.request
    predict.model_spec.name = model
    predict.model_spec.signature_name = request.signature_name
    for name, tensor in request.inputs.items():
        proto = predict.inputs[name]
        proto.dtype = types.DataType.Value(tensor.dtype)
        for size in tensor.shape:
            proto.tensor_shape.dim.add().size = size
        getattr(proto, _VALUE_FIELD[tensor.dtype]).extend(tensor.values)
    # Deterministic: map entries (the inputs) in key order, so the same examples always make
    # the same file, and the same SHA-256 in the version's marker.
    data: bytes = log.SerializeToString(deterministic=True)
    return data


def warmup_file(examples: Path, saved_model_dir: Path, model: str) -> bytes:
    """The `assets.extra/tf_serving_warmup_requests` file for `examples` and the SavedModel at
    `saved_model_dir`, every example checked first; WarmupError if any is unusable."""
    signatures = serving_signatures(saved_model_dir)
    return tfrecord_file(_checked(examples, signatures, lambda r: prediction_log(r, model)))
