"""The exit path: one guest load or store of 1..8 bytes from a KVM exit, as cheaply as possible.

A run loop calls ``exit_store(view, addr, value, size)`` / ``exit_load(view, addr, size)`` with
the current FlatView and plain ints it decoded itself, so nothing here checks types or ranges
(the public AddressSpace methods do that first). What an access to a FlatRange needs (the
callback, the offset delta, the sizes that reach it unadjusted, whether an owner's lock and
guard apply, which dispatch takes then) is worked out on its first exit and kept on the range: FlatRanges are built
anew by every render, and MemorySystem.forget_exit_paths() drops a region's paths when
something a render does not see changes (set_flush_coalesced, coalescing ranges). Anything
that is not one plain callback call (RAM, ROM devices, splitting, widening, endianness,
``accepts``, coalesced flushes, holes) goes the general way, access.read_value/write_value.

A CPU store to RAM seen through a readonly range (PAM's readonly alias) is dropped, as the
READONLY slot the KVM listener gives that range promises; DMA through write() still reaches it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .access import read_value, write_value
from .dispatch import guarded, read_bits, write_bits
from .ops import UNSPECIFIED, MemTxResult

if TYPE_CHECKING:
    from .flatview import FlatRange, FlatView
    from .ops import MemTxAttrs
    from .region import MemoryRegion

_DECODE = int(MemTxResult.DECODE_ERROR)
_MASKS = tuple((1 << (8 * size)) - 1 for size in range(9))
_NONE: frozenset[int] = frozenset()
_ANY = frozenset(range(1, 9))

#: (callback, region, offset delta, sizes it takes as they come, callback takes attrs, region is owned:
#: then dispatch's lock and guard apply)
Path = tuple[Callable[..., Any] | None, Any, int, frozenset[int], bool, bool]


def _drop(mr: MemoryRegion, offset: int, value: int, size: int, attrs: MemTxAttrs) -> int:
    return _DECODE


_GENERAL: Path = (None, None, 0, _NONE, False, False)
_DROP: Path = (_drop, None, 0, _ANY, True, False)


def store_path(fr: FlatRange) -> Path:
    """How a guest store into ``fr`` reaches its region."""
    mr = fr.mr
    if mr.is_ram:
        return _DROP if fr.readonly else _GENERAL
    ops = mr.ops
    if mr.flush_coalesced_mmio or not ops.direct_sizes:
        return _GENERAL
    delta = fr.offset_in_region - fr.start
    if ops.write is not None:
        return (ops.write, mr, delta, ops.direct_sizes, False, guarded(mr))
    return (ops.write_with_attrs, mr, delta, ops.direct_sizes, True, guarded(mr))


def load_path(fr: FlatRange) -> Path:
    """How a guest load from ``fr`` reaches its region."""
    mr = fr.mr
    ops = mr.ops
    if mr.is_ram or mr.is_rom_device or mr.flush_coalesced_mmio or not ops.direct_sizes:
        return _GENERAL
    delta = fr.offset_in_region - fr.start
    if ops.read is not None:
        return (ops.read, mr, delta, ops.direct_sizes, False, guarded(mr))
    return (ops.read_with_attrs, mr, delta, ops.direct_sizes, True, guarded(mr))


def exit_store(view: FlatView, addr: int, value: int, size: int) -> int:
    """Store the low ``size`` bytes of ``value`` at ``addr``; the result bits (0: OK)."""
    fr = view._mru
    if fr is None or not fr.start <= addr < fr.end:
        fr = view.find(addr)
        if fr is None:
            return _store_general(view, addr, value, size)
    path = fr.store_path
    if path is None:
        path = fr.store_path = store_path(fr)
    fn, mr, delta, sizes, with_attrs, owned = path
    offset = addr + delta
    if size in sizes and not offset & (size - 1):
        if owned:
            return write_bits(mr, offset, value, size, UNSPECIFIED)
        if with_attrs:
            return int(fn(mr, offset, value, size, UNSPECIFIED))
        fn(mr, offset, value, size)
        return 0
    if fn is _drop:  # a CPU store into ROM is dropped whatever its alignment
        return _DECODE
    return _store_general(view, addr, value, size)


def exit_load(view: FlatView, addr: int, size: int) -> int:
    """Load ``size`` bytes at ``addr`` as a little-endian int (a failed access reads as QEMU's default)."""
    fr = view._mru
    if fr is None or not fr.start <= addr < fr.end:
        fr = view.find(addr)
        if fr is None:
            return read_value(view, addr, size, UNSPECIFIED)
    path = fr.load_path
    if path is None:
        path = fr.load_path = load_path(fr)
    fn, mr, delta, sizes, with_attrs, owned = path
    offset = addr + delta
    if size in sizes and not offset & (size - 1):
        if owned:
            return read_bits(mr, offset, size, UNSPECIFIED)[0] & _MASKS[size]
        value: int = fn(mr, offset, size, UNSPECIFIED)[0] if with_attrs else fn(mr, offset, size)
        return value & _MASKS[size]
    return read_value(view, addr, size, UNSPECIFIED)


def _store_general(view: FlatView, addr: int, value: int, size: int) -> int:
    return int(write_value(view, addr, value, size, UNSPECIFIED))
