"""The Predict request each protocol sends, built once from the same inputs: TF Serving's REST
columnar body (`{"signature_name", "inputs": {name: nested list}}`) and the gRPC PredictRequest
with one TensorProto per input.

It must not send anything; it validates the inputs and builds the messages only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class InputsError(ValueError):
    """Inputs that can't be one tensor per name: the message names the input and the rule."""


def _shape_and_leaves(name: str, value: Any) -> tuple[list[int], list[Any]]:
    """The dimensions of a nested list and its leaves in row-major order; ragged lists and
    mixed leaf types are refused (a tensor is rectangular and of one type)."""
    if not isinstance(value, list):
        return [], [value]
    if not value:
        raise InputsError(f"input {name!r}: an empty list has no shape")
    parts = [_shape_and_leaves(name, v) for v in value]
    inner = parts[0][0]
    if any(shape != inner for shape, _ in parts):
        raise InputsError(f"input {name!r}: ragged nested lists are not a tensor")
    return [len(value), *inner], [leaf for _, leaves in parts for leaf in leaves]


def _dtype(name: str, leaves: list[Any]) -> str:
    kinds = {type(v) for v in leaves}
    if kinds <= {int} and not any(isinstance(v, bool) for v in leaves):
        return "DT_INT64"
    if kinds <= {int, float}:
        return "DT_FLOAT"
    if kinds <= {str}:
        return "DT_STRING"
    raise InputsError(f"input {name!r}: leaves must be all numbers or all strings (got {sorted(k.__name__ for k in kinds)})")


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a tensorflow DataType name
    shape: tuple[int, ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PredictInputs:
    """What every request of the run asks of the model."""

    signature_name: str
    tensors: tuple[Tensor, ...]
    raw: dict[str, Any]

    def rest_body(self) -> bytes:
        """TF Serving's REST predict body, columnar form (tensorflow_serving/g3doc/api_rest.md,
        "Specifying input tensors in column format"): a number that is a whole float stays a
        float, so the model sees the dtype the gRPC request names."""
        return json.dumps({"signature_name": self.signature_name, "inputs": self.raw}).encode()

    def grpc_request(self, model: str) -> Any:
        """The PredictRequest (tensorflow_serving/apis/predict.proto) for `model`."""
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = self.signature_name
        for tensor in self.tensors:
            proto = tensor_pb2.TensorProto(
                dtype=types_pb2.DataType.Value(tensor.dtype),
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in tensor.shape]
                ),
            )
            if tensor.dtype == "DT_FLOAT":
                proto.float_val.extend(float(v) for v in tensor.values)
            elif tensor.dtype == "DT_INT64":
                proto.int64_val.extend(tensor.values)
            else:
                proto.string_val.extend(v.encode() for v in tensor.values)
            request.inputs[tensor.name].CopyFrom(proto)
        return request


def parse_inputs(text: str, signature_name: str = "serving_default") -> PredictInputs:
    """Inputs from JSON `{name: nested list}`; InputsError says what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InputsError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise InputsError('must be a JSON object of input name to nested list, e.g. {"x": [[1.0], [2.0]]}')
    tensors = []
    for name, value in raw.items():
        shape, leaves = _shape_and_leaves(name, value)
        dtype = _dtype(name, leaves)
        if dtype == "DT_FLOAT":
            raw[name] = _as_floats(value)
        tensors.append(Tensor(name, dtype, tuple(shape), tuple(leaves)))
    return PredictInputs(signature_name, tuple(tensors), raw)


def _as_floats(value: Any) -> Any:
    return [_as_floats(v) for v in value] if isinstance(value, list) else float(value)
