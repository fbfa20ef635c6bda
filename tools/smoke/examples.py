"""The example input each model's smoke prediction sends: the file `models/<model>/smoke.json`
(a TF Serving REST predict request body, row or columnar format), or else one derived from the
model's `serving_default` signature when every input has a known shape (a leading -1 taken as a
batch of one) and a numeric, boolean or string dtype (zeros, false, empty strings).

It must not call the endpoints; it reads only the example files and the signature given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from tools.lib.stackfile import ROOT

EXAMPLES_DIR = ROOT / "models"
EXAMPLE_FILE = "smoke.json"
SIGNATURE = "serving_default"  # tensorflow/cc/saved_model/signature_constants.h
# tensorflow/core/framework/types.proto: what a zero looks like in TF Serving's JSON
# (util/json_tensor.cc reads numbers, booleans and strings).
_ZERO = {
    **{t: 0.0 for t in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16")},
    **{t: 0 for t in ("DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16", "DT_UINT32", "DT_UINT64")},
    "DT_BOOL": False,
    "DT_STRING": "",
}


class NoExample(Exception):
    """No example input for a model: why, in one line."""


def example_file(model: str, examples_dir: Path = EXAMPLES_DIR) -> Path:
    return examples_dir / model / EXAMPLE_FILE


def read_example(model: str, examples_dir: Path = EXAMPLES_DIR) -> dict[str, Any] | None:
    """The model's example request, or None without the file; NoExample for a bad file."""
    path = example_file(model, examples_dir)
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NoExample(f"{path}: not a JSON request: {exc}") from None
    if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
        raise NoExample(f"{path}: must be a JSON object with 'instances' or 'inputs' (TF Serving's predict request)")
    return body


def _filled(shape: list[int], value: Any) -> Any:
    return value if not shape else [_filled(shape[1:], value) for _ in range(shape[0])]


def derived_example(model: str, signatures: get_model_metadata_pb2.SignatureDefMap) -> dict[str, Any]:
    """A columnar request from the signature (`{"inputs": {name: tensor}}`), or NoExample."""
    if SIGNATURE not in signatures.signature_def:
        raise NoExample(f"model {model} has no {SIGNATURE} signature to derive an input from")
    inputs: dict[str, Any] = {}
    for name, info in sorted(signatures.signature_def[SIGNATURE].inputs.items()):
        dtype = str(types_pb2.DataType.Name(info.dtype))
        if dtype not in _ZERO:
            raise NoExample(f"input {name!r} of model {model} is {dtype}: no default value")
        if info.tensor_shape.unknown_rank:
            raise NoExample(f"input {name!r} of model {model} has an unknown rank")
        dims = [d.size for d in info.tensor_shape.dim]
        if dims and dims[0] == -1:
            dims[0] = 1
        if any(d < 0 for d in dims):
            raise NoExample(f"input {name!r} of model {model} has shape {[d.size for d in info.tensor_shape.dim]}")
        inputs[name] = _filled(dims, _ZERO[dtype])
    if not inputs:
        raise NoExample(f"model {model}'s {SIGNATURE} signature has no inputs")
    return {"signature_name": SIGNATURE, "inputs": inputs}

