"""TFRecord files, written the way TensorFlow's RecordWriter writes them (no compression).

Each record is framed as (tensorflow/tensorflow tensorflow/core/lib/io/record_writer.cc,
RecordWriter::WriteRecord):

    uint64 length, little-endian
    uint32 masked crc32c of those 8 bytes
    byte   data[length]
    uint32 masked crc32c of data

with the mask of tensorflow/core/lib/hash/crc32c.h: ((crc >> 15) | (crc << 17)) + 0xa282ead8,
modulo 2**32. TF Serving reads its warm-up file with SequentialRecordReader, which refuses a
record whose length or data CRC does not match (DataLoss), and then the model fails to load.

It owns the framing only; it must not know what the records hold.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """crc32c of `data`, masked as TensorFlow masks the CRCs it stores next to data."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record as it appears in a TFRecord file."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            record,
            struct.pack("<I", masked_crc32c(record)),
        )
    )


def tfrecord_file(records: Iterable[bytes]) -> bytes:
    """The bytes of a TFRecord file holding `records`, in order."""
    return b"".join(frame(record) for record in records)
