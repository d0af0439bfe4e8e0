"""QEMU's isa-debugcon at 0x402: bytes written are the firmware's log; reads return 0xe9 so SeaBIOS uses it."""
from __future__ import annotations

from typing import Callable, Optional

from memapi import MemoryRegion

from ..migration.vmstate import VMStateDescription
from .ports import port_region

DEBUGCON_IOPORT = 0x402
READBACK = 0xE9


class DebugCon:
    """Collects the log in ``output`` and hands each byte to ``on_output``."""

    vmstate = VMStateDescription("isa-debugcon")  # the log is the host's

    def __init__(self, on_output: Optional[Callable[[bytes], None]] = None) -> None:
        self.output = bytearray()
        self.on_output = on_output
        self.region = port_region("isa-debugcon", 1, self._read, self._write)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(DEBUGCON_IOPORT, self.region)

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return READBACK

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.output.append(value)
        if self.on_output is not None:
            self.on_output(bytes((value,)))
