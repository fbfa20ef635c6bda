"""A TFRecord reader written apart from tools/lib/tfrecord.py, to read back what it writes.

It checks every record as TensorFlow's SequentialRecordReader does (tensorflow/core/lib/io/
record_reader.cc, ReadChecksummed): the masked crc32c of the 8 length bytes, then the masked
crc32c of the data; a mismatch or a file that ends inside a record is an error, as it is for
TF Serving, which then refuses to load the model. Its crc32c is computed here bit by bit
(Castagnoli polynomial, reflected: 0x82F63B78, RFC 3720 appendix B.4), not with the
google-crc32c package the writer uses, so a mistake in one does not hide in the other.

It reads and checks only; it must not be used by the program.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

_POLY = 0x82F63B78


class CorruptRecord(Exception):
    pass


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    # The inverse of crc32c.h's Mask: rot = masked - kMaskDelta; (rot >> 17) | (rot << 15).
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def records(data: bytes) -> Iterator[bytes]:
    """Each record's data, after checking both of its CRCs."""
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 12]
        if len(header) < 12:
            raise CorruptRecord(f"truncated record header at offset {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if unmask(length_crc) != crc32c(header[:8]):
            raise CorruptRecord(f"corrupted record length at offset {offset}")
        body = data[offset + 12 : offset + 12 + length + 4]
        if len(body) < length + 4:
            raise CorruptRecord(f"truncated record data at offset {offset}")
        (data_crc,) = struct.unpack("<I", body[length:])
        if unmask(data_crc) != crc32c(body[:length]):
            raise CorruptRecord(f"corrupted record data at offset {offset}")
        yield body[:length]
        offset += 12 + length + 4
