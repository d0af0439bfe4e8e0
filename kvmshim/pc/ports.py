"""A port-I/O region from two callbacks: the shape every pc device here shares."""
from __future__ import annotations

from collections.abc import Callable

from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps

Read = Callable[[MemoryRegion, int, int], int]
Write = Callable[[MemoryRegion, int, int, int], None]
BYTE = AccessRules(1, 1)


def port_region(name: str, size: int, read: Read, write: Write, *,
                valid: AccessRules = AccessRules(), impl: AccessRules = BYTE) -> MemoryRegion:
    """A little-endian I/O region named as QEMU names it; ``impl`` defaults to byte accesses."""
    ops = MemoryRegionOps(read=read, write=write, endianness=Endianness.LITTLE, valid=valid, impl=impl)
    return MemoryRegion.io(name, size, ops)


def ignore_write(mr: MemoryRegion, offset: int, value: int, size: int) -> None:
    """For read-only ports."""
