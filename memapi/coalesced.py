"""Coalesced MMIO/PIO ranges: listeners hear of them at once, with no transaction (QEMU's
memory_region_add_coalescing / memory_region_clear_coalescing)."""
from __future__ import annotations

from .errors import InvalidRangeError
from .listener import MemoryRegionSection
from .region import MemoryRegion
from .system import core_of


def _notify(mr: MemoryRegion, offset: int, size: int, add: bool) -> None:
    for space in core_of(mr).address_spaces():
        view = space.current_map
        listeners = space.listeners if add else space.listeners[::-1]
        for fr in view.ranges:
            if fr.mr is not mr:
                continue
            delta = fr.start - fr.offset_in_region
            lo, hi = max(offset + delta, fr.start), min(offset + size + delta, fr.end)
            if lo >= hi:
                continue
            section = MemoryRegionSection.of(fr, view)
            for listener in listeners:
                if add:
                    listener.coalesced_io_add(section, lo, hi - lo)
                else:
                    listener.coalesced_io_del(section, lo, hi - lo)


def check(mr: MemoryRegion, offset: int, size: int) -> None:
    """A coalesced range must be non-empty and inside the region (and below 2**64)."""
    if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset and 0 < size
            and offset + size <= mr.size and offset + size < 1 << 64):
        raise InvalidRangeError(
            f"region {mr.name!r}: coalesced range {offset!r}+{size!r} does not fit in the region (size {mr.size:#x})")


def add(mr: MemoryRegion, offset: int, size: int) -> None:
    """memory_region_add_coalescing."""
    check(mr, offset, size)
    with core_of(mr).lock:
        mr.coalesced.append((offset, size))
        _notify(mr, offset, size, True)
        mr._set_flush_flag(True)


def clear(mr: MemoryRegion) -> None:
    """memory_region_clear_coalescing: flush, then drop each range telling listeners."""
    if not mr.coalesced:
        return
    system = core_of(mr)
    with system.lock:
        system.flush_coalesced()
        mr._set_flush_flag(False)
        while mr.coalesced:
            offset, size = mr.coalesced.pop(0)
            _notify(mr, offset, size, False)

