"""TF Serving's config files parsed with TF Serving's own message definitions.

TF Serving reads its config files as protobuf text format; `text_format.Parse` rejects
unknown fields, wrong types and bad nesting, so a file that parses here has the shape TF
Serving expects.

- models.config: `tensorflow_serving.config.model_server_config_pb2.ModelServerConfig`,
  the generated module of the PyPI wheel `tensorflow-serving-api` at the release of our
  image (requirements-tfs-proto.txt, installed with `--no-deps`: its config modules import
  only protobuf, never TensorFlow).
- batching.config and monitoring.config: the wheel does not ship `session_bundle_config_pb2`
  or `monitoring_config_pb2` (2.19.1 holds only apis/ and config/{model_server,
  file_system_storage_path_source,logging,log_collector}_config), and
  session_bundle_config.proto imports TensorFlow's core protos. So these two messages, and
  nothing else, are declared below, each a copy of upstream's message at 2.19.1 with every
  field, number and type: tensorflow/serving tensorflow_serving/servables/tensorflow/
  session_bundle_config.proto (BatchingParameters) and tensorflow_serving/config/
  monitoring_config.proto (MonitoringConfig, PrometheusConfig).

It parses only; it must not declare any message the wheel ships, nor more fields than
upstream's, so that it never accepts a file TF Serving would refuse.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

try:
    from tensorflow_serving.config import model_server_config_pb2
except ImportError as exc:  # pragma: no cover - the message says how to fix it
    raise ImportError(
        "TF Serving's generated config messages are missing: "
        "pip install --no-deps --require-hashes -r requirements-tfs-proto.txt (make does it)"
    ) from exc

# Upstream's .proto files at 2.19.1, as FileDescriptorProtos (the text protoc would emit).
_SESSION_BUNDLE_CONFIG = """
name: "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
package: "tensorflow.serving"
dependency: "google/protobuf/wrappers.proto"
syntax: "proto3"
message_type {
  name: "BatchingParameters"
  field { name: "max_batch_size" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Int64Value" }
  field { name: "batch_timeout_micros" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Int64Value" }
  field { name: "max_enqueued_batches" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Int64Value" }
  field { name: "num_batch_threads" number: 4 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Int64Value" }
  field { name: "thread_pool_name" number: 5 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.StringValue" }
  field { name: "enable_large_batch_splitting" number: 8 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.BoolValue" }
  field { name: "max_execution_batch_size" number: 9 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Int64Value" }
  field { name: "allowed_batch_sizes" number: 6 label: LABEL_REPEATED type: TYPE_INT64 }
  field { name: "pad_variable_length_inputs" number: 7 label: LABEL_OPTIONAL type: TYPE_BOOL }
}
"""

_MONITORING_CONFIG = """
name: "tensorflow_serving/config/monitoring_config.proto"
package: "tensorflow.serving"
syntax: "proto3"
message_type {
  name: "PrometheusConfig"
  field { name: "enable" number: 1 label: LABEL_OPTIONAL type: TYPE_BOOL }
  field { name: "path" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "MonitoringConfig"
  field { name: "prometheus_config" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".tensorflow.serving.PrometheusConfig" }
}
"""


@functools.cache
def _declared_pool() -> descriptor_pool.DescriptorPool:
    """A pool of its own, so a later wheel that ships these files cannot clash with it."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    for text in (_SESSION_BUNDLE_CONFIG, _MONITORING_CONFIG):
        pool.Add(text_format.Parse(text, descriptor_pb2.FileDescriptorProto()))
    return pool


def _declared(name: str) -> Any:
    return message_factory.GetMessageClass(_declared_pool().FindMessageTypeByName(f"tensorflow.serving.{name}"))


def message_class(file_name: str) -> Any:
    """The message class one of our config files holds."""
    if file_name == "models.config":
        return model_server_config_pb2.ModelServerConfig
    return _declared({"batching.config": "BatchingParameters", "monitoring.config": "MonitoringConfig"}[file_name])


def parse(file_name: str, text: str) -> Any:
    """Parse one of our TF Serving config files; raises text_format.ParseError if invalid."""
    message = message_class(file_name)()
    text_format.Parse(text, message)
    return message
