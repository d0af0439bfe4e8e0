"""The payload of state sections: None, bools, ints, bytes, str, lists and dicts, tagged and binary.

A small self-describing encoding (one tag byte, then a big-endian length or value) rather than
pickle or marshal, which must never read a stream from the network, and rather than JSON, which
has no bytes and no int keys. ``decode`` checks every length against the data and the nesting
depth, so a hostile stream gets a CodecError, never a host exception or a huge allocation.
"""
from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 16
_U32 = struct.Struct(">I")


class CodecError(ValueError):
    """The payload is not a valid encoding; the message says where."""


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    if value is None:
        out += b"N"
    elif value is True or value is False:
        out += b"T" if value else b"F"
    elif isinstance(value, int):
        raw = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
        out += b"i" + bytes((len(raw),)) + raw
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out += b"b" + _U32.pack(len(value)) + value
    elif isinstance(value, str):
        raw = value.encode()
        out += b"s" + _U32.pack(len(raw)) + raw
    elif isinstance(value, (list, tuple)):
        out += b"l" + _U32.pack(len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        out += b"d" + _U32.pack(len(value))
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"state keys are str or int, not {type(key).__name__} ({key!r})")
            _encode(key, out)
            _encode(item, out)
    else:
        raise TypeError(f"no encoding for {type(value).__name__} ({value!r:.60})")


def decode(data: bytes) -> Any:
    """The value ``data`` encodes, which must be all of ``data``."""
    view = memoryview(data)
    value, end = _decode(view, 0, 0)
    if end != len(view):
        raise CodecError(f"{len(view) - end} bytes after the value at offset {end}")
    return value


def _take(view: memoryview, at: int, count: int) -> int:
    if at + count > len(view):
        raise CodecError(f"value at offset {at} needs {count} bytes, {len(view) - at} left")
    return at + count


def _decode(view: memoryview, at: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CodecError(f"nesting deeper than {MAX_DEPTH} at offset {at}")
    start = _take(view, at, 1)
    tag = view[at]
    if tag in b"NTF":
        return {78: None, 84: True, 70: False}[tag], start
    if tag == ord("i"):
        end = _take(view, start, 1)
        stop = _take(view, end, view[start])
        return int.from_bytes(view[end:stop], "big", signed=True), stop
    if tag not in b"bsld":
        raise CodecError(f"unknown tag {tag:#04x} at offset {at}")
    body = _take(view, start, 4)
    (count,) = _U32.unpack_from(view, start)
    if tag in b"bs":
        stop = _take(view, body, count)
        raw = bytes(view[body:stop])
        if tag == ord("b"):
            return raw, stop
        try:
            return raw.decode(), stop
        except UnicodeDecodeError as err:
            raise CodecError(f"string at offset {at} is not UTF-8: {err.reason}") from None
    _take(view, body, count)  # every item takes at least a byte: no huge list from a small payload
    at = body
    if tag == ord("l"):
        items = []
        for _ in range(count):
            item, at = _decode(view, at, depth + 1)
            items.append(item)
        return items, at
    result = {}
    for _ in range(count):
        key, at = _decode(view, at, depth + 1)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise CodecError(f"dict key {key!r:.40} before offset {at} is not a str or int")
        result[key], at = _decode(view, at, depth + 1)
    return result, at
