"""QEMU's isa-debugcon: bytes written to its port are a log; reads return ``readback``.

SeaBIOS logs to 0x402 when a read there returns 0xe9 (``-device isa-debugcon,iobase=0x402``);
QEMU's default port, and ``-debugcon``'s, is 0xe9.
"""
from __future__ import annotations

from collections.abc import Callable

from memapi import MemoryRegion

from ..migration.vmstate import VMStateDescription
from .ports import port_region

DEBUGCON_IOPORT = 0xE9
SEABIOS_DEBUG_IOPORT = 0x402
READBACK = 0xE9


class DebugCon:
    """Collects the log in ``output`` and hands each byte to ``on_output``."""

    vmstate = VMStateDescription("isa-debugcon")  # the log is the host's

    def __init__(self, on_output: Callable[[bytes], None] | None = None, *, iobase: int = DEBUGCON_IOPORT,
                 readback: int = READBACK) -> None:
        self.output = bytearray()
        self.on_output = on_output
        self.iobase = iobase
        self.readback = readback
        self.region = port_region("isa-debugcon", 1, self._read, self._write)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(self.iobase, self.region)

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.readback

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.output.append(value)
        if self.on_output is not None:
            self.on_output(bytes((value,)))
