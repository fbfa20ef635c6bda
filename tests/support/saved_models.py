"""SavedModel version directories for the tests, their `saved_model.pb` built with TensorFlow's
own generated messages.

tensorflow.core.protobuf.saved_model_pb2 is extracted from the pinned TensorFlow wheel by
`make` (tools/tf_protos.py). The files hold the meta graphs with their tags and serving signatures, each
input a TensorInfo with its dtype and shape as TensorFlow's exporter writes them (a dimension
of unknown size is -1, a tensor of unknown rank has `unknown_rank`). No graph nodes: nothing
here runs the model, the publisher reads only the signatures.

It builds test fixtures only; it must not be used by the program.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

# An input: (DataType name, shape or None for unknown rank).
Input = tuple[str, Sequence[int] | None]
Signature = Mapping[str, Input]

PREDICT_METHOD = "tensorflow/serving/predict"  # tensorflow/cc/saved_model/signature_constants.h


def signature_def(inputs: Signature) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for alias, (dtype, shape) in inputs.items():
        info = signature.inputs[alias]
        info.name = f"serving_{alias}:0"
        info.dtype = types_pb2.DataType.Value(dtype)
        if shape is None:
            info.tensor_shape.unknown_rank = True
        else:
            for size in shape:
                info.tensor_shape.dim.add().size = size
    output = signature.outputs["output_0"]
    output.name = "StatefulPartitionedCall:0"
    output.dtype = types_pb2.DT_FLOAT
    return signature


def saved_model(graphs: Sequence[tuple[Sequence[str], Mapping[str, Signature]]]) -> bytes:
    """A serialized SavedModel: one meta graph per (tags, signatures by name)."""
    model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    for tags, signatures in graphs:
        graph = model.meta_graphs.add()
        graph.meta_info_def.tags.extend(tags)
        for name, inputs in signatures.items():
            graph.signature_def[name].CopyFrom(signature_def(inputs))
    data: bytes = model.SerializeToString()
    return data


def write_version(
    root: Path,
    signatures: Mapping[str, Signature],
    *,
    tags: Sequence[str] = ("serve",),
    extra: Mapping[str, bytes] | None = None,
) -> Path:
    """A version directory the publisher accepts, its one meta graph tagged `tags`."""
    files = {
        "saved_model.pb": saved_model([(tags, signatures)]),
        "variables/variables.index": b"index",
        "variables/variables.data-00000-of-00001": b"weights",
        **(extra or {}),
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root
