"""One access to one region: QEMU's memory_region_dispatch_read/write.

Applies the ``valid`` rules, then splits or widens the access to the ``impl``
sizes exactly as access_with_adjusted_size does (ascending addresses, the start
never re-aligned), and converts between host order and device endianness.

A region with an ``owner`` is a device's: its callbacks run under the memory system's
lock (QEMU takes the big lock in prepare_mmio_access), so vCPU threads reach one device
one at a time, and behind the owner's re-entrancy guard, which refuses (ACCESS_ERROR, and
a log line) an access that a device's own callback makes to the same device.

Results are plain ints inside; the public functions hand out MemTxResult members.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .ops import UNSPECIFIED, MemTxAttrs, MemTxResult
from .system import core_of

if TYPE_CHECKING:
    from .region import MemoryRegion

_DECODE = int(MemTxResult.DECODE_ERROR)
_U64 = (1 << 64) - 1
#: MemTxResult of each OR of result bits, so no flag arithmetic runs per access.
RESULTS = tuple(MemTxResult(bits) for bits in range(8))


def bswap(value: int, size: int) -> int:
    """Reverse the byte order of a ``size``-byte value."""
    return int.from_bytes(value.to_bytes(size, "little"), "big")


def resolve_alias(mr: MemoryRegion, offset: int) -> tuple[MemoryRegion, int]:
    """Follow aliases to the final target, applying each alias's offset (and mask)."""
    while mr.alias_target is not None:
        mask = mr.alias_mask
        offset = mr.alias_offset + (offset if mask is None else offset & mask)
        mr = mr.alias_target
    return mr, offset


def access_valid(mr: MemoryRegion, offset: int, size: int, is_write: bool, attrs: MemTxAttrs) -> bool:
    """QEMU's memory_region_access_valid, checks in QEMU's order."""
    valid = mr.ops.valid
    if valid.accepts is not None and not valid.accepts(mr, offset, size, is_write, attrs):
        return False
    if not valid.unaligned and offset & (size - 1):
        return False
    if not valid.max_access_size:
        return True
    return valid.min_access_size <= size <= valid.max_access_size


def guarded(mr: MemoryRegion) -> bool:
    """Whether accesses to ``mr`` take the system lock and the owner's re-entrancy guard."""
    return (mr.owner is not None and not mr.disable_reentrancy_guard and not mr.is_ram
            and not mr.is_rom_device and not mr.readonly)


def _read_adjusted(mr: MemoryRegion, offset: int, size: int, attrs: MemTxAttrs) -> tuple[int, int]:
    """access_with_adjusted_size for a read: (value, result bits)."""
    ops = mr.ops
    impl = ops.impl
    access = max(min(size, impl.max_access_size or 4), impl.min_access_size or 1)
    mask = (1 << (8 * access)) - 1
    big = ops.big_endian
    read, read_attrs = ops.read, ops.read_with_attrs
    value = result = 0
    for i in range(0, size, access):
        if read is not None:
            tmp = read(mr, offset + i, access) & mask
        elif read_attrs is not None:
            tmp, res = read_attrs(mr, offset + i, access, attrs)
            tmp &= mask
            result |= int(res)
        else:
            tmp = 0
        shift = (size - access - i) * 8 if big else i * 8
        value |= tmp << shift if shift >= 0 else tmp >> -shift
    return value & _U64, result


def _write_adjusted(mr: MemoryRegion, offset: int, value: int, size: int, attrs: MemTxAttrs) -> int:
    """access_with_adjusted_size for a write: the result bits."""
    ops = mr.ops
    impl = ops.impl
    access = max(min(size, impl.max_access_size or 4), impl.min_access_size or 1)
    mask = (1 << (8 * access)) - 1
    big = ops.big_endian
    write, write_attrs = ops.write, ops.write_with_attrs
    result = 0
    for i in range(0, size, access):
        shift = (size - access - i) * 8 if big else i * 8
        tmp = (value >> shift if shift >= 0 else value << -shift) & mask
        if write is not None:
            write(mr, offset + i, tmp, access)
        elif write_attrs is not None:
            result |= int(write_attrs(mr, offset + i, tmp, access, attrs))
    return result


def read_bits(mr: MemoryRegion, offset: int, size: int, attrs: MemTxAttrs) -> tuple[int, int]:
    """dispatch_read with the result as plain bits (the address-space paths OR them)."""
    if mr.alias_target is not None:
        mr, offset = resolve_alias(mr, offset)
    if not access_valid(mr, offset, size, False, attrs):
        return 0, _DECODE
    if guarded(mr):
        system = core_of(mr)
        key = id(mr.owner)
        with system.lock:
            if key in system._engaged:
                return 0, system.blocked(mr, offset, size, False)
            system._engaged.add(key)
            try:
                value, result = _read_adjusted(mr, offset, size, attrs)
            finally:
                system._engaged.discard(key)
    else:
        value, result = _read_adjusted(mr, offset, size, attrs)
    if mr.ops.big_endian:
        value = bswap(value & ((1 << (8 * size)) - 1), size)
    return value, result


def write_bits(mr: MemoryRegion, offset: int, value: int, size: int, attrs: MemTxAttrs) -> int:
    """dispatch_write with the result as plain bits."""
    if mr.alias_target is not None:
        mr, offset = resolve_alias(mr, offset)
    if not access_valid(mr, offset, size, True, attrs):
        return _DECODE
    if mr.ops.big_endian:
        value = bswap(value & ((1 << (8 * size)) - 1), size)
    if not guarded(mr):
        return _write_adjusted(mr, offset, value, size, attrs)
    system = core_of(mr)
    key = id(mr.owner)
    with system.lock:
        if key in system._engaged:
            return system.blocked(mr, offset, size, True)
        system._engaged.add(key)
        try:
            return _write_adjusted(mr, offset, value, size, attrs)
        finally:
            system._engaged.discard(key)


def dispatch_read(mr: MemoryRegion, offset: int, size: int,
                  attrs: MemTxAttrs = UNSPECIFIED) -> tuple[int, MemTxResult]:
    """Read ``size`` bytes at ``offset`` of ``mr``; the value is in host (little-endian) order."""
    value, result = read_bits(mr, offset, size, attrs)
    return value, RESULTS[result]


def dispatch_write(mr: MemoryRegion, offset: int, value: int, size: int,
                   attrs: MemTxAttrs = UNSPECIFIED) -> MemTxResult:
    """Write a host-order ``value`` of ``size`` bytes at ``offset`` of ``mr``."""
    return RESULTS[write_bits(mr, offset, value, size, attrs)]
