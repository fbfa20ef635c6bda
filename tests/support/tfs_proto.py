"""TF Serving's config messages, for parsing our config files with the protobuf library.

TF Serving reads its config files as protobuf text format. Installing tensorflow-serving-api
would pull in TensorFlow, so the messages we write are declared here with the same
package, names, numbers and types as upstream:

- tensorflow_serving/config/model_server_config.proto (ModelServerConfig, ModelConfigList,
  ModelConfig)
- tensorflow_serving/sources/storage_path/file_system_storage_path_source.proto
  (FileSystemStoragePathSourceConfig.ServableVersionPolicy)
- tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters)
- tensorflow_serving/config/monitoring_config.proto (MonitoringConfig, PrometheusConfig)

`text_format.Parse` rejects unknown fields, wrong types and bad nesting, so a file that
parses here has the shape TF Serving expects.

It must declare no more than upstream does, with upstream's numbers and types, so that it
never accepts a file TF Serving would refuse.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf import wrappers_pb2

F: Any = descriptor_pb2.FieldDescriptorProto
PACKAGE = "tensorflow.serving"


def _field(
    name: str,
    number: int,
    kind: int,
    type_name: str | None = None,
    repeated: bool = False,
    oneof: int | None = None,
) -> Any:
    field = F(
        name=name,
        number=number,
        type=kind,
        label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _message(name: str, fields: list[Any], nested: list[Any] | None = None, oneofs: list[str] | None = None) -> Any:
    message = descriptor_pb2.DescriptorProto(name=name)
    message.field.extend(fields)
    for n in nested or []:
        message.nested_type.append(n)
    for o in oneofs or []:
        message.oneof_decl.add(name=o)
    return message


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    path_source = descriptor_pb2.FileDescriptorProto(
        name="file_system_storage_path_source.proto", package=PACKAGE, syntax="proto3"
    )
    version_policy = _message(
        "ServableVersionPolicy",
        [
            _field("latest", 100, F.TYPE_MESSAGE, f".{PACKAGE}.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Latest", oneof=0),
            _field("all", 101, F.TYPE_MESSAGE, f".{PACKAGE}.FileSystemStoragePathSourceConfig.ServableVersionPolicy.All", oneof=0),
            _field("specific", 102, F.TYPE_MESSAGE, f".{PACKAGE}.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Specific", oneof=0),
        ],
        nested=[
            _message("Latest", [_field("num_versions", 1, F.TYPE_UINT32)]),
            _message("All", []),
            _message("Specific", [_field("versions", 1, F.TYPE_INT64, repeated=True)]),
        ],
        oneofs=["policy_choice"],
    )
    path_source.message_type.append(
        _message("FileSystemStoragePathSourceConfig", [], nested=[version_policy])
    )
    pool.Add(path_source)

    server_config = descriptor_pb2.FileDescriptorProto(
        name="model_server_config.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["file_system_storage_path_source.proto"],
    )
    labels_entry = _message(
        "VersionLabelsEntry",
        [_field("key", 1, F.TYPE_STRING), _field("value", 2, F.TYPE_INT64)],
    )
    labels_entry.options.map_entry = True
    server_config.message_type.extend(
        [
            _message(
                "ModelConfig",
                [
                    _field("name", 1, F.TYPE_STRING),
                    _field("base_path", 2, F.TYPE_STRING),
                    _field("model_platform", 4, F.TYPE_STRING),
                    _field(
                        "model_version_policy",
                        7,
                        F.TYPE_MESSAGE,
                        f".{PACKAGE}.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
                    ),
                    _field(
                        "version_labels",
                        8,
                        F.TYPE_MESSAGE,
                        f".{PACKAGE}.ModelConfig.VersionLabelsEntry",
                        repeated=True,
                    ),
                ],
                nested=[labels_entry],
            ),
            _message(
                "ModelConfigList",
                [_field("config", 1, F.TYPE_MESSAGE, f".{PACKAGE}.ModelConfig", repeated=True)],
            ),
            _message(
                "ModelServerConfig",
                [_field("model_config_list", 1, F.TYPE_MESSAGE, f".{PACKAGE}.ModelConfigList", oneof=0)],
                oneofs=["config"],
            ),
        ]
    )
    pool.Add(server_config)

    int64 = ".google.protobuf.Int64Value"
    batching = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching.message_type.append(
        _message(
            "BatchingParameters",
            [
                _field("max_batch_size", 1, F.TYPE_MESSAGE, int64),
                _field("batch_timeout_micros", 2, F.TYPE_MESSAGE, int64),
                _field("thread_pool_name", 3, F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
                _field("num_batch_threads", 4, F.TYPE_MESSAGE, int64),
                _field("max_enqueued_batches", 5, F.TYPE_MESSAGE, int64),
                _field("allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True),
                _field("pad_variable_length_inputs", 7, F.TYPE_BOOL),
                _field("enable_large_batch_splitting", 8, F.TYPE_BOOL),
            ],
        )
    )
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="monitoring_config.proto", package=PACKAGE, syntax="proto3"
    )
    monitoring.message_type.extend(
        [
            _message("PrometheusConfig", [_field("enable", 1, F.TYPE_BOOL), _field("path", 2, F.TYPE_STRING)]),
            _message(
                "MonitoringConfig",
                [_field("prometheus_config", 1, F.TYPE_MESSAGE, f".{PACKAGE}.PrometheusConfig")],
            ),
        ]
    )
    pool.Add(monitoring)
    return pool


def message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"{PACKAGE}.{name}"))


# Which message each of our config files holds.
FILE_MESSAGES = {
    "models.config": "ModelServerConfig",
    "batching.config": "BatchingParameters",
    "monitoring.config": "MonitoringConfig",
}


def parse(file_name: str, text: str) -> Any:
    """Parse one of our TF Serving config files; raises text_format.ParseError if invalid."""
    message = message_class(FILE_MESSAGES[file_name])()
    text_format.Parse(text, message)
    return message
