"""KVMMemoryListener: the memory core's view turned into KVM memslots (QEMU's kvm-all.c).

region_add/region_del only queue sections; commit applies every delete, then
every add. Sections are trimmed to whole host pages (sub-page heads and tails
stay unslotted and exit to userspace), split by a maximum slot size, and looked
up again by exact (gpa, size) match. Slot ids are the lowest free ones.

Dirty logging (docs/memory.md, "Dirty tracking"): a logged slot has a cached bitmap (QEMU's dirty_bmap).
log_sync fetches with KVM_GET_DIRTY_LOG; with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
the fetch no longer re-protects and log_clear does, with KVM_CLEAR_DIRTY_LOG,
for exactly the cached pages a client took. Before a logged slot is deleted or
stops logging its bits are collected, with the vCPUs held out of KVM_RUN
(``inhibit``) so no write slips between the fetch and the slot change.
"""
from __future__ import annotations

import contextlib
import heapq
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import memapi
from kvm import Cap, DirtyLogFlag, KvmError, MemFlag, Vm, dirty_bitmap_bytes
from memapi import MemoryListener, MemoryRegionSection
from memapi.ram import PAGE_BITS, PAGE_SIZE, set_bits, take_bits, test_bits

from .errors import MemslotExhaustedError

_PAGE_MASK = PAGE_SIZE - 1
_LOG = int(MemFlag.LOG_DIRTY_PAGES)


class Slot:
    """One KVM memslot as last sent to the kernel; ``bitmap``/``scratch`` exist while it logs."""

    __slots__ = ("id", "gpa", "size", "host_addr", "flags", "mr", "offset_in_region", "section_readonly",
                 "bitmap", "scratch")

    def __init__(self, slot_id: int, gpa: int, size: int, host_addr: int, flags: int,
                 mr: memapi.MemoryRegion, offset_in_region: int, section_readonly: bool) -> None:
        self.id, self.gpa, self.size, self.host_addr, self.flags = slot_id, gpa, size, host_addr, flags
        self.mr, self.offset_in_region, self.section_readonly = mr, offset_in_region, section_readonly
        self.bitmap: bytearray | None = None  # cached dirty bits, one per page (QEMU's dirty_bmap)
        self.scratch: bytearray | None = None  # what KVM_GET_DIRTY_LOG writes into

    @property
    def npages(self) -> int:
        return self.size >> PAGE_BITS

    def set_logging(self, on: bool) -> None:
        """Allocate (zeroed) or drop the dirty bitmaps."""
        nbytes = dirty_bitmap_bytes(self.size)
        self.bitmap, self.scratch = (bytearray(nbytes), bytearray(nbytes)) if on else (None, None)

    def bitmaps(self) -> tuple[bytearray, bytearray]:
        """(cached bits, scratch) of a slot that logs: only those are fetched, pushed or cleared."""
        assert self.bitmap is not None and self.scratch is not None, f"slot {self.id} does not log"
        return self.bitmap, self.scratch

    def __repr__(self) -> str:
        return f"<Slot {self.id} gpa={self.gpa:#x} size={self.size:#x} flags={self.flags:#x} {self.mr.name}>"


def align_section(section: MemoryRegionSection) -> tuple[int, int]:
    """kvm_align_section: (first whole-page gpa, whole-page size), size 0 if none."""
    gpa, size = section.offset_within_address_space, section.size
    start = (gpa + _PAGE_MASK) & ~_PAGE_MASK
    delta = start - gpa
    if delta > size:
        return start, 0
    return start, (size - delta) & ~_PAGE_MASK


class _KvmIoEvents:
    """ioeventfds and coalesced zones of one address space (MMIO, or PIO with ``pio``).

    KVM_IOEVENTFD takes QEMU's truncations: data to 32 bits, and for PIO the address
    and data to 16 bits. Coalescing errors are ignored, as QEMU does. KVM finds an ioeventfd
    to remove by its eventfd, so a dup of the notifier's fd is kept while it is assigned: a
    notifier its owner closed first is still removed (through the dup; otherwise, as QEMU,
    through the notifier's own fd).
    """

    pio = False
    vm: Vm

    def __init__(self) -> None:
        super().__init__()
        self._assigned: dict[tuple[int, int, int | None, int], int] = {}  # -> our dup of the fd

    def eventfd_add(self, section: MemoryRegionSection, match_data: bool, data: int, notifier: Any) -> None:
        self._eventfd(section, match_data, data, notifier, deassign=False)

    def eventfd_del(self, section: MemoryRegionSection, match_data: bool, data: int, notifier: Any) -> None:
        self._eventfd(section, match_data, data, notifier, deassign=True)

    def _eventfd(self, section: MemoryRegionSection, match_data: bool, data: int, notifier: Any,
                 deassign: bool) -> None:
        addr, bits = section.offset_within_address_space, (16 if self.pio else 32)
        if self.pio:
            addr &= 0xFFFF
        datamatch = data & ((1 << bits) - 1) if match_data else None
        key = (addr, section.size, datamatch, id(notifier))
        if deassign:
            kept = self._assigned.pop(key, None)
            if kept is None:  # its assignment failed: KVM has nothing to remove
                return
            try:
                fd = kept if getattr(notifier, "closed", False) else notifier.fileno()
                self.vm.ioeventfd(fd, addr, section.size, datamatch, pio=self.pio, deassign=True)
            finally:
                os.close(kept)
            return
        kept = os.dup(notifier.fileno())
        try:
            self.vm.ioeventfd(notifier.fileno(), addr, section.size, datamatch, pio=self.pio)
        except BaseException:
            os.close(kept)
            raise
        self._assigned[key] = kept

    def release_eventfds(self) -> None:
        """Close the fds of ioeventfds never deassigned (the VM, closed, dropped them)."""
        while self._assigned:
            os.close(self._assigned.popitem()[1])

    def coalesced_io_add(self, section: MemoryRegionSection, addr: int, size: int) -> None:
        with contextlib.suppress(KvmError):
            self.vm.register_coalesced_mmio(addr, size, pio=self.pio)

    def coalesced_io_del(self, section: MemoryRegionSection, addr: int, size: int) -> None:
        with contextlib.suppress(KvmError):
            self.vm.unregister_coalesced_mmio(addr, size, pio=self.pio)


class KVMMemoryListener(_KvmIoEvents, MemoryListener):
    """Memslots for one address space (as_id 0: system memory) of one VM."""

    priority = 10
    name = "kvm-memory"

    def __init__(self, vm: Vm, as_id: int = 0, max_slot_size: int | None = None,
                 inhibit: Callable[[], AbstractContextManager[object]] | None = None,
                 manual_protect: bool = True) -> None:
        """``inhibit()`` must hold every vCPU out of KVM_RUN; ``manual_protect`` uses
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 when the kernel offers it."""
        super().__init__()
        self.vm = vm
        self.as_id = as_id
        self.max_slot_size = max_slot_size or 1 << 64
        self.nr_slots = vm.check_extension(Cap.NR_MEMSLOTS) or 32
        self.readonly_allowed = bool(vm.check_extension(Cap.READONLY_MEM))
        self.inhibit = inhibit or contextlib.nullcontext
        self.slots: dict[int, Slot] = {}
        self._freed: list[int] = []  # a heap of ids below _next_id that are free again
        self._next_id = 0
        self._by_range: dict[tuple[int, int], Slot] = {}
        self._pending: list[tuple[bool, MemoryRegionSection]] = []
        self._lock = threading.RLock()  # the slot bitmaps: syncs, clears and (ring) the vCPU threads
        self.manual_protect = manual_protect and self._enable_manual_protect()
        self.failed_fetches = 0  # fetches that failed before a slot change (all its pages were marked)

    def _enable_manual_protect(self) -> bool:
        """Enable MANUAL_PROTECT_ENABLE (not INITIALLY_SET: a new log starts clean, as in the pure model)."""
        offered = self.vm.check_extension(Cap.MANUAL_DIRTY_LOG_PROTECT2)
        if not offered & DirtyLogFlag.MANUAL_PROTECT_ENABLE:
            return False
        self.vm.enable_cap(Cap.MANUAL_DIRTY_LOG_PROTECT2, int(DirtyLogFlag.MANUAL_PROTECT_ENABLE))
        return True

    # ------------------------------------------------------------ queries
    def lookup(self, gpa: int, size: int) -> Slot | None:
        """kvm_lookup_matching_slot: the slot with exactly this start and size."""
        return self._by_range.get((gpa, size))

    def has_memory(self, gpa: int, size: int) -> bool:
        """QEMU's kvm_accel_has_memory, behind the ``KVM`` marker of ``info mtree -f``."""
        return self.lookup(gpa, min(self.max_slot_size, size)) is not None

    def slot_table(self) -> list[tuple[int, int, int]]:
        """(gpa, size, flags) of every slot, by address."""
        return sorted((s.gpa, s.size, s.flags) for s in self.slots.values())

    # ------------------------------------------------------------ topology
    def region_add(self, section: MemoryRegionSection) -> None:
        self._pending.append((True, section))

    def region_del(self, section: MemoryRegionSection) -> None:
        self._pending.append((False, section))

    def commit(self) -> None:
        pending, self._pending = self._pending, []
        deletes = [s for add, s in pending if not add]
        adds = [s for add, s in pending if add]
        overlap = any(d.offset_within_address_space < a.end and a.offset_within_address_space < d.end
                      for d in deletes for a in adds)
        logged = any(slot.flags & _LOG for d in deletes for slot in self._section_slots(d))
        with self.inhibit() if overlap or logged else contextlib.nullcontext():
            for section in deletes:
                self._set_phys_mem(section, add=False)
            for section in adds:
                self._set_phys_mem(section, add=True)

    def _mappable(self, mr: memapi.MemoryRegion, add: bool) -> bool | None:
        """kvm_set_phys_mem's first test: None to ignore, else whether this is (still) an add."""
        if mr.is_ram:
            return add
        writable = not mr.readonly and not mr.is_rom_device
        if writable or not self.readonly_allowed or mr.ram_block is None:
            return None
        return add and mr.romd_mode

    def _flags(self, mr: memapi.MemoryRegion, section_readonly: bool) -> int:
        """kvm_mem_flags, plus the section's readonly: unlike QEMU, a readonly alias gives a READONLY slot."""
        flags = MemFlag.LOG_DIRTY_PAGES if mr.effective_dirty_log_mask else 0
        if (section_readonly or mr.readonly or mr.is_romd) and self.readonly_allowed:
            flags |= MemFlag.READONLY
        return int(flags)

    def _chunks(self, section: MemoryRegionSection) -> Iterator[tuple[int, int, int]]:
        start, size = align_section(section)
        offset = section.offset_within_region + (start - section.offset_within_address_space)
        block = section.mr.ram_block if section.mr is not None else None
        if block is not None:  # never past the host memory (a region sized beyond its block)
            size = min(size, max(0, block.max_length - offset) & ~_PAGE_MASK)
        while size:
            chunk = min(self.max_slot_size, size)
            yield start, chunk, offset
            start, size, offset = start + chunk, size - chunk, offset + chunk

    def _set_phys_mem(self, section: MemoryRegionSection, add: bool) -> None:
        mr = section.mr
        assert mr is not None  # only eventfd sections have no region
        mapped = self._mappable(mr, add)
        if mapped is None:
            return
        if not mapped:
            for gpa, size, _ in self._chunks(section):
                slot = self.lookup(gpa, size)
                if slot is None:
                    return
                self._delete(slot)
            return
        block = mr.ram_block
        assert block is not None  # _mappable maps only regions with RAM
        for gpa, size, offset in self._chunks(section):
            host = block.host_addr + offset
            if host & _PAGE_MASK:
                continue  # KVM needs a page-aligned host address: leave it to exit.
            self._add(gpa, size, host, mr, offset, section.readonly)

    def _free_id(self) -> int:
        """The lowest free id (QEMU: the lowest index whose size is 0)."""
        if self._freed:
            return heapq.heappop(self._freed)
        if self._next_id < self.nr_slots:
            self._next_id += 1
            return self._next_id - 1
        raise MemslotExhaustedError(
            f"kvm-memory: no free slot available: all {self.nr_slots} KVM_CAP_NR_MEMSLOTS slots are in use")

    def _add(self, gpa: int, size: int, host: int, mr: memapi.MemoryRegion, offset: int, readonly: bool) -> None:
        slot = Slot(self._free_id(), gpa, size, host, self._flags(mr, readonly), mr, offset, readonly)
        slot.set_logging(bool(slot.flags & _LOG))
        with self._lock:  # known before KVM can log into it (dirty ring)
            self.slots[slot.id] = slot
        try:
            self._ioctl(slot, size, slot.flags)
        except KvmError:
            self._forget(slot)
            raise
        self._by_range[(gpa, size)] = slot

    def _delete(self, slot: Slot) -> None:
        if slot.flags & _LOG:
            self._collect(slot)
        self._ioctl(slot, 0, 0)
        self._forget(slot)
        del self._by_range[(slot.gpa, slot.size)]

    def _forget(self, slot: Slot) -> None:
        with self._lock:
            del self.slots[slot.id]
        heapq.heappush(self._freed, slot.id)

    def _ioctl(self, slot: Slot, size: int, flags: int) -> None:
        self.vm.set_user_memory_region(self._kvm_slot(slot), slot.gpa, size, slot.host_addr, flags)

    def _update_flags(self, slot: Slot) -> None:
        """kvm_slot_update_flags: same id, gpa and size; a READONLY change deletes first (75d61fbc)."""
        flags = self._flags(slot.mr, slot.section_readonly)
        if flags == slot.flags:
            return
        stopping = bool(slot.flags & _LOG and not flags & _LOG)
        reflag = bool((flags ^ slot.flags) & MemFlag.READONLY)  # a delete and re-add: a hole
        if flags & _LOG and slot.bitmap is None:
            with self._lock:
                slot.set_logging(True)
        with self.inhibit() if stopping or reflag else contextlib.nullcontext():
            if stopping:
                self._collect(slot)
            if reflag:
                self._ioctl(slot, 0, flags)
            self._ioctl(slot, slot.size, flags)
        slot.flags = flags
        if stopping:
            with self._lock:
                slot.set_logging(False)

    def _section_slots(self, section: MemoryRegionSection) -> Iterator[Slot]:
        for gpa, size, _ in self._chunks(section):
            slot = self.lookup(gpa, size)
            if slot is None:
                return
            yield slot

    # ------------------------------------------------------------ dirty log
    def log_start(self, section: MemoryRegionSection, old: int, new: int) -> None:
        if old == 0:
            for slot in list(self._section_slots(section)):
                self._update_flags(slot)

    def log_stop(self, section: MemoryRegionSection, old: int, new: int) -> None:
        if new == 0:
            for slot in list(self._section_slots(section)):
                self._update_flags(slot)

    def log_sync(self, section: MemoryRegionSection) -> None:
        """KVM_GET_DIRTY_LOG for each slot of the section, fanned out to the region's bitmaps."""
        with self._lock:
            for slot in list(self._section_slots(section)):
                if slot.bitmap is not None:
                    self._fetch(slot)
                    self._push(slot)

    def log_clear(self, section: MemoryRegionSection) -> None:
        """Manual protect: KVM_CLEAR_DIRTY_LOG for the cached bits of the section's pages, then drop them."""
        if not self.manual_protect:
            return
        lo, hi = section.offset_within_address_space, section.end
        with self._lock:
            for slot in list(self.slots.values()):
                if slot.bitmap is not None and slot.gpa < hi and lo < slot.gpa + slot.size:
                    first = (max(lo, slot.gpa) - slot.gpa) >> PAGE_BITS
                    last = (min(hi, slot.gpa + slot.size) - 1 - slot.gpa) >> PAGE_BITS
                    self._clear(slot, first, last - first + 1)

    def _clear(self, slot: Slot, first: int, count: int) -> None:
        """Re-protect the cached dirty pages among [first, first+count): start rounded down to 64
        pages, length up to 64 or the slot end (the kernel's rules); padding bits are zero."""
        bitmap, _ = slot.bitmaps()
        bits = test_bits(bitmap, first, count)
        if not bits:
            return
        start = first & ~63
        length = min(-(-(first + count - start) // 64) * 64, slot.npages - start)
        mask = (bits << (first - start)).to_bytes(dirty_bitmap_bytes(length << PAGE_BITS), "little")
        self.vm.clear_dirty_log(self._kvm_slot(slot), start, length, mask)
        take_bits(bitmap, first, count)

    def _fetch(self, slot: Slot) -> None:
        """KVM_GET_DIRTY_LOG into the scratch bitmap, OR-ed into the cache only once it succeeded
        (so a failed fetch never disturbs earlier bits); ENOENT (not logging) counts as success."""
        bitmap, scratch = slot.bitmaps()
        try:
            self.vm.get_dirty_log(self._kvm_slot(slot), scratch)
        except KvmError as err:
            if err.errno_name == "ENOENT":
                return
            raise
        if scratch != bytes(len(scratch)):
            merged = int.from_bytes(bitmap, "little") | int.from_bytes(scratch, "little")
            bitmap[:] = merged.to_bytes(len(bitmap), "little")

    def _push(self, slot: Slot) -> None:
        """Fan the cached bits out to the region's bitmaps; only manual protect keeps them (for log_clear)."""
        bitmap, _ = slot.bitmaps()
        if bitmap == bytes(len(bitmap)):
            return
        memapi.set_dirty_lebitmap(slot.mr, slot.offset_in_region, bitmap, slot.npages)
        if not self.manual_protect:
            bitmap[:] = bytes(len(bitmap))

    def _collect(self, slot: Slot) -> None:
        """The last fetch before a slot is deleted or stops logging. If it fails, every page of
        the slot is marked dirty: the kernel's bits die with the slot, ours must not."""
        with self._lock:
            try:
                self._fetch(slot)
            except KvmError:
                self.failed_fetches += 1
                set_bits(slot.bitmaps()[0], 0, slot.npages)
            self._push(slot)

    def _kvm_slot(self, slot: Slot) -> int:
        return slot.id | self.as_id << 16


class KVMIoListener(_KvmIoEvents, MemoryListener):
    """QEMU's "kvm-io": PIO ioeventfds and coalesced PIO on the I/O address space."""

    priority = 10
    name = "kvm-io"
    pio = True

    def __init__(self, vm: Vm) -> None:
        super().__init__()
        self.vm = vm
