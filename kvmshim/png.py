"""A minimal PNG writer (8-bit RGB, no filtering) on zlib and struct alone."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence, Union

Rgb = tuple[int, int, int]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rows: Sequence[bytes], width: int) -> bytes:
    """PNG bytes of ``rows``, each ``3 * width`` bytes of RGB, top row first."""
    if any(len(row) != 3 * width for row in rows):
        raise ValueError(f"png: every row must hold {3 * width} bytes (width {width}, RGB)")
    header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for row in rows), 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("png: not a PNG (bad signature or no IHDR first)")
    return struct.unpack(">II", data[16:24])


def write_png(path: Union[str, Path], rows: Sequence[bytes], width: int) -> None:
    Path(path).write_bytes(encode_png(rows, width))
