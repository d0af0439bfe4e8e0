"""The tick port (0x510) of the demo guests: each 4-byte read returns the next tick number.

The handler decides the number (0 ends the guest) and the pace: it runs in the
vCPU thread while the guest waits for the read, so it may sleep or inspect memory. ``ticks``
migrates with the guest; the handler is the host's and stays behind.
"""
from __future__ import annotations

from collections.abc import Callable

from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps

from .migration.vmstate import VMStateDescription

TICK_PORT = 0x510


class TickPort:
    """A read-only port; ``ticks`` counts the reads answered."""

    vmstate = VMStateDescription("kvmshim-tick", fields=("ticks",))

    def __init__(self, handler: Callable[[], int]) -> None:
        self.handler = handler
        self.ticks = 0
        self.region = MemoryRegion.io("tick", 4, MemoryRegionOps(
            read=self._read, write=lambda mr, offset, value, size: None, endianness=Endianness.LITTLE,
            valid=AccessRules(4, 4), impl=AccessRules(4, 4)))

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        self.ticks += 1
        return self.handler() & 0xFFFFFFFF
