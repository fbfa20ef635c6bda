"""Warm-up requests (tools/lib/warmup.py, tools/lib/tfrecord.py): the TFRecord file read back by
an independent reader (tests/support/tfrecord_reader.py) and parsed as TF Serving's
PredictionLog, the JSON lines examples built into tensors as TF Serving's REST API builds
them, and every example TF Serving would fail the load on refused before upload."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tests.support.saved_models import Signature, saved_model, write_version
from tests.support.tfrecord_reader import CorruptRecord, crc32c, records, unmask
from tools.lib.tfrecord import frame, masked_crc32c, tfrecord_file
from tools.lib.warmup import (
    MAX_RECORDS,
    InputSpec,
    Signatures,
    WarmupError,
    parse_examples,
    serving_signatures,
    warmup_file,
)

IMAGE = InputSpec(dtype="DT_FLOAT", shape=(-1, 2, 3))
SIGNATURES: Signatures = {
    "serving_default": {"image": IMAGE},
    "with_ids": {
        "tokens": InputSpec(dtype="DT_INT32", shape=(-1, -1)),
        "text": InputSpec(dtype="DT_STRING", shape=(-1,)),
        "flag": InputSpec(dtype="DT_BOOL", shape=None),
    },
    "small": {"x": InputSpec(dtype="DT_INT8", shape=(-1,))},
    "half": {"x": InputSpec(dtype="DT_HALF", shape=(-1,))},
}


def image(value: float = 0.5) -> list[list[float]]:
    return [[value] * 3 for _ in range(2)]


def examples(tmp_path: Path, *bodies: Any, name: str = "warmup.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((b if isinstance(b, str) else json.dumps(b)) + "\n" for b in bodies))
    return path


def refusal(tmp_path: Path, *bodies: Any, signatures: Signatures = SIGNATURES) -> str:
    path = examples(tmp_path, *bodies)
    with pytest.raises(WarmupError) as caught:
        parse_examples(path, signatures)
    return str(caught.value)


# --- TFRecord framing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # RFC 3720 appendix B.4 (iSCSI CRC32C examples) and the usual check value.
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (b"123456789", 0xE3069283),
    ],
)
def test_the_readers_crc32c_gives_the_published_check_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def test_the_writers_masked_crc_is_tensorflows_mask_of_crc32c() -> None:
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 5):
        assert unmask(masked_crc32c(data)) == crc32c(data)


def test_records_read_back_in_order_with_both_crcs_checked() -> None:
    written = [b"", b"one", bytes(range(256)) * 40, b"\x00" * 3]

    data = tfrecord_file(written)

    assert list(records(data)) == written
    assert len(data) == sum(len(r) + 16 for r in written)
    assert struct.unpack("<Q", data[:8]) == (0,)


@pytest.mark.parametrize(
    ("offset", "message"),
    [(2, "corrupted record length"), (12, "corrupted record data"), (14, "corrupted record data")],
)
def test_the_reader_refuses_a_damaged_record(offset: int, message: str) -> None:
    data = bytearray(frame(b"payload"))
    data[offset] ^= 0x01
    with pytest.raises(CorruptRecord, match=message):
        list(records(bytes(data)))


def test_the_reader_refuses_a_truncated_file() -> None:
    data = tfrecord_file([b"first", b"second"])
    with pytest.raises(CorruptRecord, match="truncated"):
        list(records(data[:-1]))


# --- examples to tensors --------------------------------------------------------------------


def test_row_format_stacks_instances_along_a_new_first_dimension(tmp_path: Path) -> None:
    path = examples(tmp_path, {"instances": [image(0.25), image(0.75)]})

    [request] = parse_examples(path, SIGNATURES)

    assert (request.line, request.signature_name) == (1, "serving_default")
    tensor = request.inputs["image"]
    assert (tensor.dtype, tensor.shape) == ("DT_FLOAT", (2, 2, 3))
    assert tensor.values == (0.25,) * 6 + (0.75,) * 6


def test_columnar_format_takes_the_tensor_as_given(tmp_path: Path) -> None:
    path = examples(tmp_path, {"inputs": [image(1)]}, {"inputs": {"image": [image(2), image(3)]}})

    first, second = parse_examples(path, SIGNATURES)

    assert first.inputs["image"].shape == (1, 2, 3)
    assert first.inputs["image"].values == (1.0,) * 6
    assert second.inputs["image"].shape == (2, 2, 3)


def test_named_instances_with_strings_bytes_and_a_scalar_of_any_rank(tmp_path: Path) -> None:
    raw = bytes([0, 255, 10])
    b64 = base64.b64encode(raw).decode()
    path = examples(
        tmp_path,
        "",  # blank lines are skipped; line numbers stay the file's
        {
            "signature_name": "with_ids",
            "instances": [
                {"tokens": [1, 2, 3], "text": "héllo", "flag": True},
                {"tokens": [4, 5, 6], "text": {"b64": b64}, "flag": False},
            ],
        },
        {
            "signature_name": "with_ids",
            "inputs": {"tokens": [[7]], "text": [{"b64": b64.rstrip("=")}], "flag": True},
        },
    )

    rows, columns = parse_examples(path, SIGNATURES)

    assert (rows.line, columns.line) == (2, 3)
    assert rows.inputs["tokens"].shape == (2, 3)
    assert rows.inputs["tokens"].values == (1, 2, 3, 4, 5, 6)
    assert rows.inputs["text"].values == ("héllo".encode(), raw)
    assert rows.inputs["flag"].shape == (2,)
    assert columns.inputs["flag"].shape == ()
    assert columns.inputs["text"].values == (raw,)


def test_instances_of_base64_objects_are_values_not_named_inputs(tmp_path: Path) -> None:
    signatures: Signatures = {"serving_default": {"jpeg": InputSpec("DT_STRING", (-1,))}}
    path = examples(tmp_path, {"instances": [{"b64": "/9j/"}, {"b64": "/9g="}]})

    [request] = parse_examples(path, signatures)

    assert request.inputs["jpeg"].shape == (2,)
    assert request.inputs["jpeg"].values == (b"\xff\xd8\xff", b"\xff\xd8")


def test_exactly_the_record_limit_is_accepted(tmp_path: Path) -> None:
    path = examples(tmp_path, *[{"inputs": [image()]}] * MAX_RECORDS)
    assert len(parse_examples(path, SIGNATURES)) == MAX_RECORDS == 1000


def test_one_request_past_the_record_limit_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path, *[{"inputs": [image()]}] * (MAX_RECORDS + 1))
    assert f"holds {MAX_RECORDS + 1} requests" in message
    assert f"at most {MAX_RECORDS}" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # names
        ({"inputs": {"imgae": [image()]}}, "input 'imgae' (\"inputs\") is not an input of the signature (inputs: image)"),
        (
            {"signature_name": "with_ids", "inputs": {"tokens": [[1]], "text": ["a"]}},
            "input 'flag' is missing from \"inputs\"",
        ),
        (
            {"signature_name": "with_ids", "instances": [{"tokens": [1], "text": "a", "flag": True, "extra": 1}]},
            "input 'extra' (instance 0) is not an input",
        ),
        (
            {"signature_name": "with_ids", "instances": [[1, 2]]},
            "\"instances\" is a plain list, but the signature has several inputs (flag, text, tokens)",
        ),
        ({"signature_name": "nope", "inputs": [image()]}, "signature 'nope' is not in the SavedModel's 'serve' graph"),
        # dtypes
        ({"inputs": [[["1", 2, 3], [4, 5, 6]]]}, "input 'image': \"1\" is not a number for DT_FLOAT"),
        ({"inputs": [[[True, 2, 3], [4, 5, 6]]]}, "input 'image': true is not a number for DT_FLOAT"),
        ({"inputs": [[[1e39, 2, 3], [4, 5, 6]]]}, "1e+39 is out of range for DT_FLOAT"),
        ({"signature_name": "small", "inputs": [1, 128]}, "input 'x': 128 is out of range for DT_INT8 (-128 to 127)"),
        ({"signature_name": "small", "inputs": [1.0]}, "input 'x': 1.0 is not a whole number (JSON integer) for DT_INT8"),
        (
            {"signature_name": "with_ids", "inputs": {"tokens": [[1]], "text": [7], "flag": True}},
            "input 'text': 7 is not a string",
        ),
        (
            {"signature_name": "with_ids", "inputs": {"tokens": [[1]], "text": [{"b64": "@@"}], "flag": True}},
            "input 'text': {\"b64\": \"@@\"} is not valid base64",
        ),
        (
            {"signature_name": "with_ids", "inputs": {"tokens": [[1]], "text": ["a"], "flag": 1}},
            "input 'flag': 1 is not true or false for DT_BOOL",
        ),
        ({"signature_name": "half", "inputs": [1.0]}, "input 'x' has dtype DT_HALF, which TF Serving's REST API"),
        # shapes
        ({"inputs": [image()][0]}, "input 'image': shape [2, 3] does not fit the signature's [-1, 2, 3]"),
        ({"inputs": [[[1, 2], [3, 4]]]}, "input 'image': shape [1, 2, 2] does not fit the signature's [-1, 2, 3]"),
        ({"inputs": [[[1, 2, 3], [4, 5]]]}, "input 'image': a list of 2 at depth 2 where the first has 3"),
        ({"inputs": [[[1, 2, 3], 4]]}, "input 'image': 4 is at depth 2 of the nested lists"),
        (
            {"instances": [image(), [[1.0, 2.0, 3.0]]]},
            "input 'image': instance 1 has shape [1, 3], instance 0 [2, 3]",
        ),
        # the request itself
        ({"instances": []}, "\"instances\" must be a non-empty list"),
        ({"inputs": [image()], "instances": [image()]}, "exactly one of \"instances\" and \"inputs\""),
        ({"input": [image()]}, "unknown key 'input'; allowed keys: inputs, instances, signature_name"),
        ({"signature_name": 3, "inputs": [image()]}, "\"signature_name\" must be a string"),
        ([image()], "a request must be a JSON object"),
        ("{\"inputs\": [1,", "not valid JSON"),
    ],
)
def test_an_example_tf_serving_would_fail_the_load_on_is_refused(
    tmp_path: Path, body: Any, expected: str
) -> None:
    message = refusal(tmp_path, {"inputs": [image()]}, body)

    assert f"{tmp_path / 'warmup.jsonl'} line 2: " in message
    assert expected in message
    assert "line 1" not in message, "the good line is not blamed"


def test_every_bad_line_is_named_once(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"inputs": "x"}, {"inputs": [image()]}, "[]", "nonsense")
    assert [line for line in (1, 2, 3, 4) if f"line {line}:" in message] == [1, 3, 4]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    assert "holds no request" in refusal(tmp_path, "", "  ")


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(WarmupError, match="cannot read it"):
        parse_examples(tmp_path / "absent.jsonl", SIGNATURES)



# --- the SavedModel's signatures, and the records TF Serving replays ----------------------

SERVE_SIGNATURES: Mapping[str, Signature] = {
    "serving_default": {"image": ("DT_FLOAT", [-1, 2, 3])},
    "with_ids": {
        "tokens": ("DT_INT64", [-1, 4]),
        "text": ("DT_STRING", [-1]),
        "flag": ("DT_BOOL", None),
    },
    "half": {"x": ("DT_HALF", [-1])},
}


def test_signatures_come_from_the_graph_tagged_exactly_serve(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(
        saved_model(
            [
                (["serve", "gpu"], {"serving_default": {"other": ("DT_INT32", [1])}}),
                (["serve"], SERVE_SIGNATURES),
            ]
        )
    )

    signatures = serving_signatures(tmp_path)

    assert signatures == {
        "serving_default": {"image": InputSpec("DT_FLOAT", (-1, 2, 3))},
        "with_ids": {
            "tokens": InputSpec("DT_INT64", (-1, 4)),
            "text": InputSpec("DT_STRING", (-1,)),
            "flag": InputSpec("DT_BOOL", None),
        },
        "half": {"x": InputSpec("DT_HALF", (-1,))},
    }


def test_signatures_are_read_from_a_text_saved_model_too(tmp_path: Path) -> None:
    model = saved_model_pb2.SavedModel.FromString(saved_model([(["serve"], SERVE_SIGNATURES)]))
    (tmp_path / "saved_model.pbtxt").write_text(text_format.MessageToString(model))

    assert serving_signatures(tmp_path)["with_ids"]["tokens"] == InputSpec("DT_INT64", (-1, 4))


def test_a_saved_model_without_a_serve_graph_is_refused(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(saved_model([(["train"], SERVE_SIGNATURES)]))
    with pytest.raises(WarmupError, match=r"no meta graph tagged exactly 'serve'.*tags found: train"):
        serving_signatures(tmp_path)


def test_an_unreadable_saved_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(WarmupError, match="cannot read its SavedModel"):
        serving_signatures(tmp_path)


def _shape(proto: Any) -> tuple[int, ...]:
    return tuple(d.size for d in proto.tensor_shape.dim)


def test_the_warmup_file_holds_prediction_logs_tf_serving_replays(tmp_path: Path) -> None:
    version = write_version(tmp_path / "3", SERVE_SIGNATURES)
    path = examples(
        tmp_path,
        {"instances": [image(0.25), image(-1.5)]},
        {
            "signature_name": "with_ids",
            "inputs": {"tokens": [[1, 2, 3, 2**40]], "text": ["a", {"b64": "AP8="}], "flag": True},
        },
    )

    data = warmup_file(path, version, "resnet")

    logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records(data)]
    assert [log.SerializeToString(deterministic=True) for log in logs] == list(records(data)), (
        "nothing in the records that PredictionLog does not define"
    )
    assert warmup_file(path, version, "resnet") == data, "the same examples, the same file"
    # saved_model_warmup.cc replays predict, classify, regress and multi-inference logs only.
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    first, second = (log.predict_log.request for log in logs)
    assert (first.model_spec.name, first.model_spec.signature_name) == ("resnet", "serving_default")
    assert (second.model_spec.name, second.model_spec.signature_name) == ("resnet", "with_ids")
    assert set(first.inputs) == {"image"} and set(second.inputs) == {"tokens", "text", "flag"}

    image_tensor = first.inputs["image"]
    assert image_tensor.dtype == types_pb2.DT_FLOAT
    assert _shape(image_tensor) == (2, 2, 3)
    assert list(image_tensor.float_val) == [0.25] * 6 + [-1.5] * 6
    tokens, text, flag = (second.inputs[name] for name in ("tokens", "text", "flag"))
    assert (tokens.dtype, _shape(tokens), list(tokens.int64_val)) == (
        types_pb2.DT_INT64, (1, 4), [1, 2, 3, 2**40]
    )
    assert (text.dtype, _shape(text), list(text.string_val)) == (
        types_pb2.DT_STRING, (2,), [b"a", b"\x00\xff"]
    )
    assert (flag.dtype, _shape(flag), list(flag.bool_val)) == (types_pb2.DT_BOOL, (), [True])
    for log in logs:
        for tensor in log.predict_log.request.inputs.values():
            # Tensor::FromProto fills a tensor from exactly one value per element here.
            values = [f for f, _ in tensor.ListFields() if f.name.endswith("_val")]
            assert len(values) == 1
            assert len(getattr(tensor, values[0].name)) == math.prod(_shape(tensor))


def test_examples_are_checked_against_the_saved_models_own_signatures(tmp_path: Path) -> None:
    version = write_version(tmp_path / "3", SERVE_SIGNATURES)
    path = examples(
        tmp_path,
        {"signature_name": "with_ids", "inputs": {"tokens": [[1, 2, 3]], "text": ["a"], "flag": True}},
        {"signature_name": "half", "inputs": [1.0]},
    )

    with pytest.raises(WarmupError) as caught:
        warmup_file(path, version, "resnet")

    message = str(caught.value)
    assert "line 1: input 'tokens': shape [1, 3] does not fit the signature's [-1, 4]" in message
    assert "line 2: input 'x' has dtype DT_HALF" in message
