"""Dirty tracking bookkeeping (QEMU memory.c and physmem.c; docs/memory.md, "Dirty tracking").

Bitmaps live on each RAM block, one per client. Listeners fill them through
log_sync (KVM: KVM_GET_DIRTY_LOG via ``set_dirty_lebitmap``); host writes
through an AddressSpace fill them directly, since KVM cannot see those.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .errors import ArgumentError, DirtyLogError, InvalidRangeError
from .ram import PAGE_BITS, PAGE_SIZE, DirtyClient, RamBlock, test_bits
from .region import MemoryRegion
from .system import MemorySystem, core_of

if TYPE_CHECKING:
    from .listener import MemoryListener


class GlobalDirty(enum.IntFlag):
    """Reasons for global dirty tracking (QEMU's GLOBAL_DIRTY_*)."""

    MIGRATION = 1
    DIRTY_RATE = 2
    LIMIT = 4


_GLOBAL_MASK = 0x7
_VGA_BIT = 1 << DirtyClient.VGA


def _clients(mask: int) -> list[int]:
    return [c for c in DirtyClient if mask & (1 << c)]


def _need_ram(mr: MemoryRegion, what: str, offset: int = 0, length: int = 0) -> RamBlock:
    """The region's RAM block, once ``[offset, offset+length)`` is known to lie inside it (up to its
    maximum size: a resizeable region's bitmaps cover that, and so may a slot from before a shrink)."""
    if not isinstance(mr, MemoryRegion) or mr.ram_block is None:
        raise DirtyLogError(f"region {getattr(mr, 'name', mr)!r}: {what} needs a region with RAM (QEMU asserts)")
    limit = mr.ram_block.max_length
    if (not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0
            or offset + length > limit):
        raise InvalidRangeError(
            f"region {mr.name!r}: {what} range {offset!r}+{length!r} is outside the region (size {limit:#x})")
    return mr.ram_block


def set_log(mr: MemoryRegion, log: bool, client: int) -> None:
    """memory_region_set_log: only DIRTY_MEMORY_VGA, reference-counted."""
    if client != DirtyClient.VGA:
        raise DirtyLogError(f"region {mr.name!r}: set_log client {client!r} is not VGA (QEMU asserts)")
    if not isinstance(log, int) or log not in (0, 1):
        raise ArgumentError(f"region {mr.name!r}: set_log({log!r}) is not a bool")
    if not log and mr.vga_logging_count == 0:
        raise DirtyLogError(f"region {mr.name!r}: set_log(False) without a matching set_log(True)")
    old = mr.vga_logging_count
    new = old + (1 if log else -1)
    mr.vga_logging_count = new
    if bool(old) == bool(new):
        return
    system = core_of(mr)
    with system.transaction():
        mr.dirty_log_mask = (mr.dirty_log_mask & ~_VGA_BIT) | (_VGA_BIT if log else 0)
        system.update_pending |= mr.enabled


def host_write(mr: MemoryRegion, offset: int, length: int) -> None:
    """invalidate_and_set_dirty: a write through the memory API dirties the clients of the effective mask."""
    mask, block = mr.effective_dirty_log_mask, mr.ram_block
    if mask and block is not None:
        with core_of(mr).lock:  # a vCPU thread's exit races another thread's snapshot
            block.set_dirty(offset, length, _clients(mask))


def set_dirty(mr: MemoryRegion, offset: int, length: int) -> None:
    """memory_region_set_dirty: mark pages dirty for the region's effective clients."""
    _need_ram(mr, "set_dirty", offset, length)
    host_write(mr, offset, length)


def set_dirty_lebitmap(mr: MemoryRegion, offset: int, bitmap: bytes | bytearray, npages: int) -> None:
    """Fan a fetched bitmap out (physical_memory_set_dirty_lebitmap): VGA always, MIGRATION while tracking."""
    block = _need_ram(mr, "set_dirty_lebitmap", offset, npages << PAGE_BITS)
    first = offset >> PAGE_BITS
    block.merge_bitmap(DirtyClient.VGA, first, bitmap, npages)
    system = core_of(mr)
    if system.global_dirty_tracking or system.dirty_log_stopping:
        block.merge_bitmap(DirtyClient.MIGRATION, first, bitmap, npages)


class DirtyBitmapSnapshot:
    """Bits taken by snapshot_and_clear_dirty, over 64-page-aligned pages [first, first+count)."""

    __slots__ = ("first", "count", "bits")

    def __init__(self, first: int, count: int, bits: int) -> None:
        self.first, self.count, self.bits = first, count, bits

    def get_dirty(self, mr: MemoryRegion, offset: int, length: int) -> bool:
        """memory_region_snapshot_get_dirty: any page of the range set in the snapshot."""
        _need_ram(mr, "get_dirty of a snapshot", offset, length)
        lo = (offset >> PAGE_BITS) - self.first
        hi = ((offset + length - 1) >> PAGE_BITS) - self.first
        if lo < 0 or hi >= self.count:
            raise DirtyLogError(f"region {mr.name!r}: range {offset:#x}+{length:#x} is outside the snapshot")
        return bool((self.bits >> lo) & ((1 << (hi - lo + 1)) - 1))

    def dirty_count(self) -> int:
        """How many pages were dirty."""
        return self.bits.bit_count()

    def dirty_pages(self) -> list[int]:
        """Page numbers (relative to the RAM block) that were dirty, ascending."""
        words = memoryview(self.bits.to_bytes(-(-self.count // 64) * 8, "little")).cast("Q")
        out: list[int] = []
        for index, word in enumerate(words):
            if word:
                page = self.first + index * 64
                while word:
                    low = word & -word
                    out.append(page + low.bit_length() - 1)
                    word ^= low
        return out


def sync(system: MemorySystem, mr: MemoryRegion | None = None, last_stage: bool = False) -> None:
    """memory_region_sync_dirty_bitmap: log_sync per logged range of each listener's space, or log_sync_global."""
    from .listener import MemoryRegionSection

    for listener in list(system.listeners_sorted):
        space = listener.address_space
        if space is None:  # unregistered by an earlier listener's callback
            continue
        if listener.has("log_sync"):
            view = space.current_map
            for fr in view.ranges:
                if fr.dirty_log_mask and (mr is None or fr.mr is mr):
                    listener.log_sync(MemoryRegionSection.of(fr, view))
        elif listener.has("log_sync_global"):
            listener.log_sync_global(last_stage)


def _after_sync(system: MemorySystem) -> None:
    for listener in list(system.listeners_sorted):
        listener.log_global_after_sync()


def _log_clear(mr: MemoryRegion, offset: int, length: int) -> None:
    """memory_region_clear_dirty_bitmap: log_clear with each mapped piece of [offset, offset+length)."""
    from .listener import MemoryRegionSection

    for listener in list(core_of(mr).listeners_sorted):
        space = listener.address_space
        if space is None or not listener.has("log_clear"):
            continue
        view = space.current_map
        for fr in view.ranges:
            if fr.mr is not mr:
                continue
            lo = max(offset, fr.offset_in_region)
            hi = min(offset + length, fr.offset_in_region + fr.end - fr.start)
            if lo < hi:
                start = fr.start + lo - fr.offset_in_region
                listener.log_clear(MemoryRegionSection(mr, view, lo, hi - lo, start, fr.readonly, fr.nonvolatile,
                                                fr.unmergeable))


def snapshot_and_clear_dirty(mr: MemoryRegion, offset: int, length: int, client: int) -> DirtyBitmapSnapshot:
    """Sync, then atomically take the client's bits over the range widened to 64 pages."""
    block = _need_ram(mr, "snapshot_and_clear_dirty", offset, length)
    _check_client(mr, client)
    system = core_of(mr)
    with system.lock:
        sync(system, mr)
        first = (offset >> PAGE_BITS) & ~63
        last = -(-((offset + length + PAGE_SIZE - 1) >> PAGE_BITS) // 64) * 64
        count = min(last, -(-block.npages // 64) * 64) - first
        snap = DirtyBitmapSnapshot(first, count, block.take_dirty(client, first, count))
        _log_clear(mr, offset, length)
        _after_sync(system)
    return snap


def reset_dirty(mr: MemoryRegion, offset: int, length: int, client: int) -> None:
    """memory_region_reset_dirty: test-and-clear the client's bits, then log_clear the page-rounded range."""
    block = _need_ram(mr, "reset_dirty", offset, length)
    _check_client(mr, client)
    with core_of(mr).lock:
        first = offset >> PAGE_BITS
        last = (offset + length - 1) >> PAGE_BITS
        if block.take_dirty(client, first, last - first + 1):
            _log_clear(mr, first << PAGE_BITS, (last - first + 1) << PAGE_BITS)


def get_dirty(mr: MemoryRegion, offset: int, length: int, client: int) -> bool:
    """Peek without clearing (for tests and the demo; QEMU removed this API in 2019)."""
    block = _need_ram(mr, "get_dirty", offset, length)
    first = offset >> PAGE_BITS
    last = (offset + length - 1) >> PAGE_BITS
    return bool(test_bits(block.dirty[client], first, last - first + 1))


def _check_client(mr: MemoryRegion, client: int) -> None:
    if not isinstance(client, int) or isinstance(client, bool) or client not in tuple(DirtyClient):
        raise DirtyLogError(f"region {mr.name!r}: dirty client {client!r} is not VGA, CODE or MIGRATION")


def global_start(system: MemorySystem, flags: int) -> bool:
    """memory_global_dirty_log_start: the first reason on calls log_global_start, then re-renders."""
    if not isinstance(flags, int) or not flags or flags & ~_GLOBAL_MASK:
        raise DirtyLogError(f"global dirty log start: flags {flags!r} must be a non-empty subset of {_GLOBAL_MASK:#x}")
    with system.lock:
        flags &= ~system.global_dirty_tracking
        if not flags:
            return True
        old = system.global_dirty_tracking
        system.global_dirty_tracking |= flags
        if old:
            return True
        started: list[MemoryListener] = []
        for listener in list(system.listeners_sorted):
            if not listener.log_global_start():
                for s in reversed(started):
                    s.log_global_stop()
                system.global_dirty_tracking = old
                return False
            started.append(listener)
        with system.transaction():
            system.update_pending = True
    return True


def global_stop(system: MemorySystem, flags: int) -> None:
    """memory_global_dirty_log_stop, losing no MIGRATION bit (QEMU drops those of the last interval).

    When the last reason goes: sync, so listeners hand over what they gathered; then re-render with
    ``dirty_log_stopping`` set, so the bits a listener collects as its logging stops (KVM fetches
    each slot with the vCPUs held out) still reach MIGRATION; then log_global_stop, in reverse.
    """
    tracking = system.global_dirty_tracking
    if not isinstance(flags, int) or not flags or flags & ~_GLOBAL_MASK or tracking & flags != flags:
        raise DirtyLogError(
            f"global dirty log stop: flags {flags!r} are not all on (tracking {tracking:#x})")
    with system.lock:
        if system.global_dirty_tracking & ~flags:
            system.global_dirty_tracking &= ~flags
            return
        sync(system, None, last_stage=True)
        system.global_dirty_tracking = 0
        system.dirty_log_stopping = True
        try:
            with system.transaction():
                system.update_pending = True
        finally:
            system.dirty_log_stopping = False
        for listener in reversed(list(system.listeners_sorted)):
            listener.log_global_stop()
