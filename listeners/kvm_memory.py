"""KVMMemoryListener: the memory core's view turned into KVM memslots (QEMU's kvm-all.c).

region_add/region_del only queue sections; commit applies every delete, then
every add. Sections are trimmed to whole host pages (sub-page heads and tails
stay unslotted and exit to userspace), split by a maximum slot size, and looked
up again by exact (gpa, size) match. Slot ids are the lowest free ones.
"""
from __future__ import annotations

import contextlib
import heapq
from typing import Callable, ContextManager, Optional

import memapi
from kvm import Cap, KvmError, MemFlag, Vm, dirty_bitmap_bytes
from memapi import MemoryListener, MemoryRegionSection
from memapi.ram import PAGE_BITS, PAGE_SIZE

_PAGE_MASK = PAGE_SIZE - 1


class MemslotExhaustedError(memapi.MemApiError):
    """More memslots needed than KVM_CAP_NR_MEMSLOTS allows."""


class Slot:
    """One KVM memslot as last sent to the kernel."""

    __slots__ = ("id", "gpa", "size", "host_addr", "flags", "mr", "offset_in_region", "section_readonly")

    def __init__(self, slot_id: int, gpa: int, size: int, host_addr: int, flags: int,
                 mr: memapi.MemoryRegion, offset_in_region: int, section_readonly: bool) -> None:
        self.id, self.gpa, self.size, self.host_addr, self.flags = slot_id, gpa, size, host_addr, flags
        self.mr, self.offset_in_region, self.section_readonly = mr, offset_in_region, section_readonly

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


class KVMMemoryListener(MemoryListener):
    """Memslots for one address space (as_id 0: system memory) of one VM."""

    priority = 10
    name = "kvm-memory"

    def __init__(self, vm: Vm, as_id: int = 0, max_slot_size: Optional[int] = None,
                 inhibit: Optional[Callable[[], ContextManager]] = None) -> None:
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

    # ------------------------------------------------------------ queries
    def lookup(self, gpa: int, size: int) -> Optional[Slot]:
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
        with self.inhibit() if overlap else contextlib.nullcontext():
            for section in deletes:
                self._set_phys_mem(section, add=False)
            for section in adds:
                self._set_phys_mem(section, add=True)

    def _mappable(self, mr: memapi.MemoryRegion, add: bool) -> Optional[bool]:
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

    def _chunks(self, section: MemoryRegionSection):
        start, size = align_section(section)
        offset = section.offset_within_region + (start - section.offset_within_address_space)
        while size:
            chunk = min(self.max_slot_size, size)
            yield start, chunk, offset
            start, size, offset = start + chunk, size - chunk, offset + chunk

    def _set_phys_mem(self, section: MemoryRegionSection, add: bool) -> None:
        mr = section.mr
        add = self._mappable(mr, add)
        if add is None:
            return
        if not add:
            for gpa, size, _ in self._chunks(section):
                slot = self.lookup(gpa, size)
                if slot is None:
                    return
                self._delete(slot)
            return
        block = mr.ram_block
        for gpa, size, offset in self._chunks(section):
            host = block.host_addr + mr.ram_offset + offset
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
        slot_id = self._free_id()
        slot = Slot(slot_id, gpa, size, host, self._flags(mr, readonly), mr, offset, readonly)
        try:
            self._ioctl(slot, size, slot.flags)
        except KvmError:
            heapq.heappush(self._freed, slot_id)
            raise
        self.slots[slot_id] = slot
        self._by_range[(gpa, size)] = slot

    def _delete(self, slot: Slot) -> None:
        if slot.flags & MemFlag.LOG_DIRTY_PAGES:
            self._sync_slot(slot)
        self._ioctl(slot, 0, 0)
        del self.slots[slot.id]
        heapq.heappush(self._freed, slot.id)
        del self._by_range[(slot.gpa, slot.size)]

    def _ioctl(self, slot: Slot, size: int, flags: int) -> None:
        self.vm.set_user_memory_region(slot.id | self.as_id << 16, slot.gpa, size, slot.host_addr, flags)

    def _update_flags(self, slot: Slot) -> None:
        """kvm_slot_update_flags: same id, gpa and size; a READONLY change deletes first (75d61fbc)."""
        flags = self._flags(slot.mr, slot.section_readonly)
        if flags == slot.flags:
            return
        if slot.flags & MemFlag.LOG_DIRTY_PAGES and not flags & MemFlag.LOG_DIRTY_PAGES:
            self._sync_slot(slot)
        if (flags ^ slot.flags) & MemFlag.READONLY:
            self._ioctl(slot, 0, flags)
        self._ioctl(slot, slot.size, flags)
        slot.flags = flags

    def _section_slots(self, section: MemoryRegionSection):
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
        for slot in list(self._section_slots(section)):
            self._sync_slot(slot)

    def _sync_slot(self, slot: Slot) -> None:
        """KVM_GET_DIRTY_LOG into the region's bitmaps; ENOENT (no logging) counts as success."""
        bitmap = bytearray(dirty_bitmap_bytes(slot.size))
        try:
            self.vm.get_dirty_log(slot.id | self.as_id << 16, bitmap)
        except KvmError as err:
            if err.errno_name == "ENOENT":
                return
            raise
        memapi.set_dirty_lebitmap(slot.mr, slot.offset_in_region, bitmap, slot.size >> PAGE_BITS)

    # ------------------------------------------------------------ ioeventfd / coalesced
    pio = False

    def eventfd_add(self, section: MemoryRegionSection, match_data: bool, data: int, notifier) -> None:
        self._eventfd(section, match_data, data, notifier, deassign=False)

    def eventfd_del(self, section: MemoryRegionSection, match_data: bool, data: int, notifier) -> None:
        self._eventfd(section, match_data, data, notifier, deassign=True)

    def _eventfd(self, section, match_data, data, notifier, deassign: bool) -> None:
        addr, bits = section.offset_within_address_space, (16 if self.pio else 32)
        if self.pio:
            addr &= 0xFFFF
        datamatch = data & ((1 << bits) - 1) if match_data else None
        self.vm.ioeventfd(notifier.fileno(), addr, section.size, datamatch, pio=self.pio, deassign=deassign)

    def coalesced_io_add(self, section: MemoryRegionSection, addr: int, size: int) -> None:
        with contextlib.suppress(KvmError):
            self.vm.register_coalesced_mmio(addr, size, pio=self.pio)

    def coalesced_io_del(self, section: MemoryRegionSection, addr: int, size: int) -> None:
        with contextlib.suppress(KvmError):
            self.vm.unregister_coalesced_mmio(addr, size, pio=self.pio)


class KVMIoListener(MemoryListener):
    """QEMU's "kvm-io": PIO ioeventfds and coalesced PIO on the I/O address space."""

    priority = 10
    name = "kvm-io"
    pio = True
    eventfd_add = KVMMemoryListener.eventfd_add
    eventfd_del = KVMMemoryListener.eventfd_del
    _eventfd = KVMMemoryListener._eventfd
    coalesced_io_add = KVMMemoryListener.coalesced_io_add
    coalesced_io_del = KVMMemoryListener.coalesced_io_del

    def __init__(self, vm: Vm) -> None:
        super().__init__()
        self.vm = vm
