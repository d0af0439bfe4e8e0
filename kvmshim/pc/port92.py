"""QEMU's ``port92`` (System Control Port A at 0x92): bit 1 drives the A20 gate, a rising bit 0 resets.

KVM applies no A20 mask (QEMU's KVM machines ignore the line too), so ``set_a20`` is only
told; ``request_reset`` asks the machine for a reset, the fast reset of PS/2 systems.
"""
from __future__ import annotations

from collections.abc import Callable

from memapi import MemoryRegion

from ..migration.vmstate import VMStateDescription
from .ports import port_region

PORT92_IOPORT = 0x92
FAST_RESET, A20 = 0x01, 0x02


class Port92:
    """The latch reads back as written (port92_read); a system reset clears bit 0 (port92_reset)."""

    vmstate = VMStateDescription("port92", fields=("outport",))

    def __init__(self, request_reset: Callable[[], None],
                 set_a20: Callable[[int], None] | None = None) -> None:
        self.request_reset = request_reset
        self.set_a20 = set_a20
        self.outport = 0
        self.region = port_region("port92", 1, self._read, self._write)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(PORT92_IOPORT, self.region)

    def reset(self) -> None:
        self.outport &= ~FAST_RESET

    @property
    def a20(self) -> int:
        return self.outport >> 1 & 1

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.outport

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        old, self.outport = self.outport, value
        if self.set_a20 is not None:
            self.set_a20(value >> 1 & 1)
        if value & FAST_RESET and not old & FAST_RESET:
            self.request_reset()
