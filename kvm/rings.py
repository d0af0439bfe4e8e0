"""Readers of the two rings KVM shares with userspace: coalesced MMIO/PIO and the dirty ring.

Both are single-producer rings written by the kernel. x86 keeps stores in order, so
reading an entry after seeing its index (or flags) and then publishing our index (or
RESET flag) needs no explicit barrier from Python.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._fd import PAGE_SIZE
from ._kvm_cffi import ffi
from .constants import DirtyGfnFlag

if TYPE_CHECKING:
    from .vcpu import Vcpu

#: Entries in the coalesced MMIO ring page.
COALESCED_RING_ENTRIES = (PAGE_SIZE - ffi.sizeof("struct kvm_coalesced_mmio_ring")) // ffi.sizeof(
    "struct kvm_coalesced_mmio")
_DIRTY, _RESET = int(DirtyGfnFlag.DIRTY), int(DirtyGfnFlag.RESET)


@dataclass(frozen=True)
class CoalescedEntry:
    """One write KVM queued instead of exiting: ``data`` is the ``len`` bytes written."""

    phys_addr: int  # a port number when ``pio``
    data: bytes
    pio: bool


class CoalescedMmioRing:
    """The VM's coalesced MMIO/PIO ring, read through *vcpu*'s mapping (one ring per VM,
    visible in every vCPU). ``drain()`` consumes entries in the order the guest wrote them."""

    def __init__(self, vcpu: Vcpu) -> None:
        self._vcpu = vcpu  # keeps the mapping alive
        self._ring = vcpu.coalesced_ring()
        self.capacity = COALESCED_RING_ENTRIES

    def __len__(self) -> int:
        """Entries waiting."""
        return int((self._ring.last - self._ring.first) % self.capacity)

    def drain(self) -> Iterator[CoalescedEntry]:
        """Yield the waiting entries oldest first; each is consumed (``first`` advanced) as it
        is yielded, so stopping early leaves the rest queued."""
        ring = self._ring
        while ring.first != ring.last:
            entry = ring.coalesced_mmio[ring.first]
            record = CoalescedEntry(int(entry.phys_addr), bytes(ffi.buffer(entry.data))[:entry.len],
                                    bool(entry.pio))
            ring.first = (ring.first + 1) % self.capacity
            yield record


class DirtyRing:
    """A vCPU's dirty ring of *entries* ``kvm_dirty_gfn`` (a power of two; the VM enabled
    Cap.DIRTY_LOG_RING(_ACQ_REL) with ``entries * 16`` bytes before creating the vCPU).

    ``harvest()`` yields each dirtied page as (slot, offset) and marks it RESET; after
    harvesting, ``Vm.reset_dirty_rings()`` re-protects the pages so they can be reported again.
    A page may be reported more than once: deduplicate where it matters.
    """

    def __init__(self, vcpu: Vcpu, entries: int) -> None:
        if entries <= 0 or entries & (entries - 1):
            raise ValueError(f"dirty ring of vcpu {vcpu.id}: {entries} entries (a power of two)")
        self._vcpu = vcpu
        self._gfns = vcpu.dirty_ring(entries)
        self._mask = entries - 1
        self.next = 0  # index of the next entry to harvest
        self.harvested = 0

    def harvest(self) -> Iterator[tuple[int, int]]:
        """(slot with as_id << 16, page offset in the slot) for each entry KVM published."""
        while True:
            gfn = self._gfns[self.next & self._mask]
            if gfn.flags & (_DIRTY | _RESET) != _DIRTY:
                return
            slot, offset = int(gfn.slot), int(gfn.offset)
            gfn.flags = _RESET
            self.next += 1
            self.harvested += 1
            yield slot, offset
