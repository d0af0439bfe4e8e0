"""Device models for the guests: plain MemoryRegionOps, no KVM involved.

``serial`` is the transmit side of a 16550 at 0x3f8, ``debug-exit`` ends the run
with a status like QEMU's isa-debug-exit (our status is the byte itself),
``testdev`` is the MMIO register file the ``mmio`` guest checks, and ``pio-test``
is the port range the ``pio`` guest exercises. Each declares its migration state (``vmstate``):
what a guest could see, not what the host collected (``output``, ``accesses``, ``writes``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from memapi import AccessRules, MemoryRegion

from .migration.vmstate import VMStateDescription
from .pc.ports import port_region

_LSR = 5
_LSR_THR_EMPTY_AND_IDLE = 0x60


class Serial:
    """16550 transmit path: THR writes become output, LSR always says ready."""

    vmstate = VMStateDescription("kvmshim-serial")  # nothing a guest can read back

    def __init__(self, on_output: Callable[[bytes], None] | None = None) -> None:
        self.output = bytearray()
        self.on_output = on_output
        self.region = port_region("serial", 8, self._read, self._write, valid=AccessRules(1, 1))

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return _LSR_THR_EMPTY_AND_IDLE if offset == _LSR else 0

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset == 0:
            self.output.append(value & 0xFF)
            if self.on_output is not None:
                self.on_output(bytes((value & 0xFF,)))


class DebugExit:
    """A port whose byte written ends the run; ``status`` is that byte."""

    vmstate = VMStateDescription("kvmshim-debug-exit", fields=("status",))

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self.status: int | None = None
        self._on_exit = on_exit
        # impl stays unrestricted: a wide write reaches _write once, so status is its low byte
        self.region = port_region("debug-exit", 1, lambda mr, offset, size: 0, self._write,
                                  impl=AccessRules())

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.status = value & 0xFF
        self._on_exit(self.status)


TESTDEV_ID = 0x4B564D53


class TestDevice:
    """The ``mmio`` guest's register file: ID (ro), 32/16/8-bit scratch, result; records accesses."""

    __test__ = False  # not a pytest class
    vmstate = VMStateDescription("kvmshim-testdev", fields=("regs",))

    def __init__(self) -> None:
        self.regs = {0x4: 0, 0x8: 0, 0xA: 0, 0x10: 0}
        self.accesses: list[tuple[str, int, int, int]] = []
        self.region = port_region("testdev", 0x1000, self._read, self._write,
                                  valid=AccessRules(1, 4), impl=AccessRules(1, 4))

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        value = TESTDEV_ID if offset == 0 else self.regs.get(offset, 0)
        value &= (1 << (8 * size)) - 1
        self.accesses.append(("read", offset, size, value))
        return value

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.accesses.append(("write", offset, size, value))
        if offset in self.regs:
            self.regs[offset] = value

    @property
    def result(self) -> int:
        return self.regs[0x10]


class PortTestDevice:
    """16 ports at 0x600 for the ``pio`` guest: records writes, reads return fixed values."""

    READS: ClassVar[dict[int, int]] = {0x8: 0x01, 0xA: 0x0203, 0xC: 0x04050607}
    vmstate = VMStateDescription("kvmshim-pio-test")  # reads are fixed, writes only recorded

    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []
        unaligned = AccessRules(1, 4, unaligned=True)
        self.region = port_region("pio-test", 0x10, self._read, self._write, valid=unaligned, impl=unaligned)

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.READS.get(offset, 0) & ((1 << (8 * size)) - 1)

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.writes.append((offset, value, size))
