"""One access to one region: QEMU's memory_region_dispatch_read/write.

Applies the ``valid`` rules, then splits or widens the access to the ``impl``
sizes exactly as access_with_adjusted_size does (ascending addresses, the start
never re-aligned), and converts between host order and device endianness.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .ops import UNSPECIFIED, MemTxAttrs, MemTxResult

if TYPE_CHECKING:
    from .region import MemoryRegion

_OK = MemTxResult.OK
_DECODE = MemTxResult.DECODE_ERROR
_ACCESS = MemTxResult.ACCESS_ERROR
_U64 = (1 << 64) - 1

#: Owners that are inside an MMIO callback right now (QEMU's re-entrancy guard).
_engaged_owners: set[int] = set()


def bswap(value: int, size: int) -> int:
    """Reverse the byte order of a ``size``-byte value."""
    return int.from_bytes(value.to_bytes(size, "little"), "big")


def resolve_alias(mr: "MemoryRegion", offset: int) -> tuple["MemoryRegion", int]:
    """Follow aliases to the final target, applying each alias's offset (and mask)."""
    while mr.alias is not None:
        mask = mr.alias_mask
        offset = mr.alias_offset + (offset if mask is None else offset & mask)
        mr = mr.alias
    return mr, offset


def access_valid(mr: "MemoryRegion", offset: int, size: int, is_write: bool, attrs: MemTxAttrs) -> bool:
    """QEMU's memory_region_access_valid, checks in QEMU's order."""
    valid = mr.ops.valid
    if valid.accepts is not None and not valid.accepts(mr, offset, size, is_write, attrs):
        return False
    if not valid.unaligned and offset & (size - 1):
        return False
    if not valid.max_access_size:
        return True
    return valid.min_access_size <= size <= valid.max_access_size


def _guard_applies(mr: "MemoryRegion") -> bool:
    return (
        mr.owner is not None
        and not mr.disable_reentrancy_guard
        and not mr.is_ram
        and not mr.is_rom_device
        and not mr.readonly
    )


def _adjusted(mr: "MemoryRegion", offset: int, size: int):
    """Yield (sub_offset, sub_size, shift) for each sub-access, ascending."""
    impl = mr.ops.impl
    access = max(min(size, impl.max_access_size or 4), impl.min_access_size or 1)
    big = mr.ops.big_endian
    for i in range(0, size, access):
        yield offset + i, access, (size - access - i) * 8 if big else i * 8


def _read_one(mr, ops, offset, access, attrs):
    if ops.read is not None:
        return ops.read(mr, offset, access), _OK
    if ops.read_with_attrs is not None:
        return ops.read_with_attrs(mr, offset, access, attrs)
    return 0, _OK


def _write_one(mr, ops, offset, value, access, attrs):
    if ops.write is not None:
        ops.write(mr, offset, value, access)
        return _OK
    if ops.write_with_attrs is not None:
        return ops.write_with_attrs(mr, offset, value, access, attrs)
    return _OK


def _with_guard(mr, body):
    if not _guard_applies(mr):
        return body()
    key = id(mr.owner)
    if key in _engaged_owners:
        return None
    _engaged_owners.add(key)
    try:
        return body()
    finally:
        _engaged_owners.discard(key)


def dispatch_read(mr: "MemoryRegion", offset: int, size: int, attrs: MemTxAttrs = UNSPECIFIED) -> tuple[int, MemTxResult]:
    """Read ``size`` bytes at ``offset`` of ``mr``; the value is in host (little-endian) order."""
    if mr.alias is not None:
        mr, offset = resolve_alias(mr, offset)
    if not access_valid(mr, offset, size, False, attrs):
        return 0, _DECODE
    ops = mr.ops

    def body():
        value, result = 0, _OK
        for sub, access, shift in _adjusted(mr, offset, size):
            tmp, res = _read_one(mr, ops, sub, access, attrs)
            tmp &= (1 << (8 * access)) - 1
            value |= tmp << shift if shift >= 0 else tmp >> -shift
            result |= res
        return value & _U64, result

    out = _with_guard(mr, body)
    if out is None:
        return 0, _ACCESS
    value, result = out
    if ops.big_endian:
        value = bswap(value & ((1 << (8 * size)) - 1), size)
    return value, MemTxResult(result)


def dispatch_write(mr: "MemoryRegion", offset: int, value: int, size: int, attrs: MemTxAttrs = UNSPECIFIED) -> MemTxResult:
    """Write a host-order ``value`` of ``size`` bytes at ``offset`` of ``mr``."""
    if mr.alias is not None:
        mr, offset = resolve_alias(mr, offset)
    if not access_valid(mr, offset, size, True, attrs):
        return _DECODE
    ops = mr.ops
    if ops.big_endian:
        value = bswap(value & ((1 << (8 * size)) - 1), size)

    def body():
        result = _OK
        for sub, access, shift in _adjusted(mr, offset, size):
            mask = (1 << (8 * access)) - 1
            tmp = (value >> shift if shift >= 0 else value << -shift) & mask
            result |= _write_one(mr, ops, sub, tmp, access, attrs)
        return result

    out = _with_guard(mr, body)
    return _ACCESS if out is None else MemTxResult(out)
