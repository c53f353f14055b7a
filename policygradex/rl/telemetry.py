"""Training telemetry: scalars per update in TensorBoard's event-file format, written without TensorBoard.

``tensorboard --logdir runs/x/tensorboard`` shows them. An event file is a sequence of records
``[len: u64][masked crc32c(len): u32][data][masked crc32c(data): u32]``, each ``data`` a serialised
``tensorflow.Event`` protobuf: ``wall_time`` (field 1, double), ``step`` (2, varint), ``file_version`` (3,
string) or ``summary`` (5, message) holding one ``Summary.Value`` (field 1) with ``tag`` (1, string) and
``simple_value`` (2, float). Those few fields are encoded here by hand (about thirty lines) instead of pulling in
TensorBoard and its protobuf stack for a writer.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masking of a CRC (rotate right by 15, add a constant), so that CRCs of CRCs stay useful."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, tag: str | None = None, value: float = 0.0,
          file_version: str | None = None) -> bytes:
    """One serialised Event: a scalar ``tag`` = ``value`` at ``step``, or the file's version header."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if tag is not None:
        summary_value = _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
        out += _field(5, _field(1, summary_value))
    return out


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


class ScalarWriter:
    """Appends scalars to one event file in ``folder`` (created if missing); non-finite values are skipped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.folder / f"events.out.tfevents.{now:.0f}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(self.path, "ab")
        self._file.write(record(event(now, 0, file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        now = time.time()
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self._file.write(record(event(now, step, tag=prefix + tag, value=float(value))))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in an event file, each record's CRCs checked (for tests and tools)."""
    data, out, pos = Path(path).read_bytes(), [], 0
    while pos < len(data):
        length_bytes = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc(length_bytes):
            raise ValueError(f"bad length checksum at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != masked_crc(body):
            raise ValueError(f"bad data checksum at byte {pos}")
        pos += 16 + length
        step, tag, value = _parse_event(body)
        if tag is not None:
            out.append((step, tag, value))
    return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> dict[int, bytes | int]:
    """Top-level fields of a protobuf message (the last value of each field number)."""
    out: dict[int, bytes | int] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _read_varint(buf, pos)
        elif wire == 1:
            out[number], pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            out[number], pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            out[number], pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _bytes_field(fields: dict[int, bytes | int], number: int) -> bytes:
    """A length-delimited or fixed-width field, which ``_fields`` returns as bytes (varints come back as int)."""
    value = fields[number]
    if not isinstance(value, bytes):
        raise ValueError(f"protobuf field {number} is a varint where bytes were expected")
    return value


def _parse_event(body: bytes) -> tuple[int, str | None, float]:
    event_fields = _fields(body)
    if 5 not in event_fields:
        return int(event_fields.get(2, 0)), None, float("nan")
    value_fields = _fields(_bytes_field(_fields(_bytes_field(event_fields, 5)), 1))
    return (int(event_fields.get(2, 0)), _bytes_field(value_fields, 1).decode(),
            float(np.frombuffer(_bytes_field(value_fields, 2), dtype="<f4")[0]))


def summarize(history: list[dict[str, float]], last: float = 0.1) -> dict[str, float]:
    """Mean of each statistic over the last ``last`` share of the updates (at least one): how training ended."""
    if not history:
        return {}
    tail = history[-max(1, int(len(history) * last)):]
    keys = sorted({k for h in tail for k in h})
    out = {}
    for k in keys:  # NaN where a statistic was never finite in the tail, without numpy's empty-slice warning
        values = np.array([h.get(k, np.nan) for h in tail], dtype=float)
        seen = values[~np.isnan(values)]
        out[k] = float(seen.mean()) if seen.size else float("nan")
    return out
