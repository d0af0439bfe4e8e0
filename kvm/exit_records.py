"""kvm_run exit records read with one struct.unpack_from, laid out from the compiled header.

Reading an exit's fields through cffi costs one Python-level access each; the run
loop's hot path instead unpacks the whole record at once. The formats are built from
the offsets and sizes cffi compiled from linux/kvm.h, never written by hand.
"""
from __future__ import annotations

import struct

from ._kvm_cffi import ffi

_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def record(ctype: str, member: str) -> tuple[int, struct.Struct]:
    """(offset of ``kvm_run.member``, a Struct of every field of ``ctype`` in declaration order)."""
    fmt, pos = "=", 0
    for _, field in sorted(ffi.typeof(ctype).fields, key=lambda item: item[1].offset):
        size = ffi.sizeof(field.type)
        fmt += "x" * (field.offset - pos) + (f"{size}s" if field.type.kind == "array" else _CODES[size])
        pos = field.offset + size
    return ffi.offsetof("struct kvm_run", member), struct.Struct(fmt)


#: (direction, size, port, count, data_offset)
IO_OFFSET, IO_RECORD = record("kvm_run_io_t", "io")
#: (phys_addr, data, len, is_write)
MMIO_OFFSET, MMIO_RECORD = record("kvm_run_mmio_t", "mmio")
MMIO_DATA_OFFSET = MMIO_OFFSET + ffi.offsetof("kvm_run_mmio_t", "data")
