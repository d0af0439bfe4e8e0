"""KVMDirtyRingListener: dirty logging through the per-vCPU dirty rings (QEMU's dirty-ring-size).

KVM pushes one ``{slot, offset}`` entry per newly dirtied page into the ring of
the vCPU that wrote it. Reaping walks each ring from where it stopped, sets the
page's bit in its slot's bitmap (repeated entries simply set it again), marks
the entry RESET, and then KVM_RESET_DIRTY_RINGS re-protects the harvested pages.
A sync (log_sync_global) reaps and only then hands the slot bitmaps to the
memory core, so no page is published before it is write-protected again.
KVM_GET_DIRTY_LOG is unavailable (ENXIO) in this mode.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from kvm import Cap, DirtyGfnFlag, Vcpu, Vm, ffi
from memapi import MemoryListener

from .errors import DirtyRingError
from .kvm_memory import KVMMemoryListener, Slot

_DIRTY, _RESET = int(DirtyGfnFlag.DIRTY), int(DirtyGfnFlag.RESET)
_GFN_SIZE = ffi.sizeof("struct kvm_dirty_gfn")
MIN_RING_BYTES = 4096


class KVMDirtyRingListener(KVMMemoryListener):
    """The KVM memory listener with the dirty ring: log_sync_global instead of log_sync/log_clear.

    Create it before any vCPU (the kernel refuses the ring afterwards), then
    ``add_vcpu`` each vCPU and route its KVM_EXIT_DIRTY_RING_FULL to ``reap``.
    """

    log_sync = MemoryListener.log_sync
    log_clear = MemoryListener.log_clear

    def __init__(self, vm: Vm, ring_bytes: int, *, as_id: int = 0, max_slot_size: int | None = None,
                 inhibit: Callable[[], AbstractContextManager[object]] | None = None) -> None:
        cap = Cap.DIRTY_LOG_RING_ACQ_REL if vm.check_extension(Cap.DIRTY_LOG_RING_ACQ_REL) else Cap.DIRTY_LOG_RING
        limit = vm.check_extension(cap)
        if not limit:
            raise DirtyRingError("dirty ring: the kernel offers neither KVM_CAP_DIRTY_LOG_RING nor _ACQ_REL")
        if ring_bytes & (ring_bytes - 1) or not MIN_RING_BYTES <= ring_bytes <= limit:
            raise DirtyRingError(f"dirty ring: size {ring_bytes:#x} must be a power of two in "
                                 f"[{MIN_RING_BYTES:#x}, {limit:#x}] bytes")
        super().__init__(vm, as_id, max_slot_size, inhibit, manual_protect=False)
        vm.enable_cap(cap, ring_bytes)
        self.ring_entries = ring_bytes // _GFN_SIZE
        self._rings: list[list[Any]] = []  # [the ring as u32 words, next index to harvest] per vCPU
        self.reaped = 0  # entries harvested so far, duplicates included

    def add_vcpu(self, vcpu: Vcpu) -> None:
        """Map the vCPU's ring; entries are harvested from index 0."""
        ring = vcpu.dirty_ring(self.ring_entries)
        words = memoryview(ffi.buffer(ring, self.ring_entries * _GFN_SIZE)).cast("I")
        with self._lock:
            self._rings.append([words, 0])

    def reap(self) -> int:
        """Harvest every vCPU ring into the slot bitmaps, then KVM_RESET_DIRTY_RINGS; returns the entries.

        An entry is four u32 words: flags, slot, offset (low, high). Its flags are read
        before the rest and written RESET after, which x86's ordering makes safe."""
        mask = self.ring_entries - 1
        with self._lock:
            total = 0
            for state in self._rings:
                words, index = state
                while True:
                    at = (index & mask) * 4
                    if words[at] & (_DIRTY | _RESET) != _DIRTY:
                        break
                    self._mark(words[at + 1], words[at + 2] | words[at + 3] << 32)
                    words[at] = _RESET
                    index += 1
                total += index - state[1]
                state[1] = index
            if total:
                reset = self.vm.reset_dirty_rings()
                if reset != total:
                    raise DirtyRingError(
                        f"dirty ring: KVM_RESET_DIRTY_RINGS reset {reset} entries, {total} were reaped")
                self.reaped += total
            return total

    def _mark(self, kvm_slot: int, offset: int) -> None:
        """Set the bit; entries for another address space, an unknown slot or past its end are ignored."""
        if kvm_slot >> 16 != self.as_id:
            return
        slot = self.slots.get(kvm_slot & 0xFFFF)
        if slot is not None and slot.bitmap is not None and offset < slot.npages:
            slot.bitmap[offset >> 3] |= 1 << (offset & 7)

    def _fetch(self, slot: Slot) -> None:
        self.reap()

    def log_sync_global(self, last_stage: bool) -> None:
        """Reap, then hand every logged slot's bits to the memory core (and zero them)."""
        with self._lock:
            self.reap()
            for slot in list(self.slots.values()):
                if slot.bitmap is not None:
                    self._push(slot)
