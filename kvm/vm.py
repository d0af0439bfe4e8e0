"""Vm: a VM fd (memory slots, ioeventfds, coalesced MMIO, dirty logging, vCPU creation)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ._fd import PAGE_SIZE, CData, CheckExtension, FdObject
from ._kvm_cffi import ffi
from .constants import Cap, IoeventfdFlag, MemFlag, enum_name, flag_names
from .vcpu import Vcpu


def dirty_bitmap_bytes(memory_size: int) -> int:
    """Bytes KVM writes for a slot's dirty bitmap: one bit per page, in 64-bit words."""
    pages = memory_size // PAGE_SIZE
    return (pages + 63) // 64 * 8


def _slot_desc(slot: int) -> str:
    as_id = slot >> 16
    return f"slot={slot & 0xffff}" + (f" as_id={as_id}" if as_id else "")


@contextmanager
def _bitmap(slot: int, bitmap, covered_bytes: int, writable: bool) -> Iterator[CData]:
    """A pointer into *bitmap* after checking it covers *covered_bytes* of guest memory."""
    need = dirty_bitmap_bytes(covered_bytes)
    if memoryview(bitmap).nbytes < need:
        raise ValueError(f"{_slot_desc(slot)}: dirty bitmap needs {need} bytes, "
                         f"got {memoryview(bitmap).nbytes}")
    buf = ffi.from_buffer(bitmap, require_writable=writable)
    try:
        yield buf
    finally:
        ffi.release(buf)


class Vm(CheckExtension, FdObject):
    """A VM fd. It does not own its vCPUs: each Vcpu closes its own fd
    (the kernel keeps the VM alive until the last of them is closed)."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        super().__init__(fd)
        self.vcpu_mmap_size = vcpu_mmap_size
        self._slot_sizes: dict[int, int] = {}

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        fd = self._ioctl("KVM_CREATE_VCPU", vcpu_id, f"id={vcpu_id}")
        return Vcpu(fd, vcpu_id, self.vcpu_mmap_size)

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory_size: int,
                               userspace_addr: int, flags: int = 0) -> None:
        """Add, move, re-flag or (memory_size=0) delete a slot; *slot* may carry as_id << 16."""
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": memory_size, "userspace_addr": userspace_addr})
        self._ioctl("KVM_SET_USER_MEMORY_REGION", region,
                    f"{_slot_desc(slot)} gpa={guest_phys_addr:#x} size={memory_size:#x} "
                    f"uaddr={userspace_addr:#x} flags={flag_names(MemFlag, flags)}")
        if memory_size:
            self._slot_sizes[slot] = memory_size
        else:
            self._slot_sizes.pop(slot, None)

    def ioeventfd(self, fd: int, addr: int, length: int, datamatch: int | None = None,
                  pio: bool = False, deassign: bool = False) -> None:
        """Assign (or deassign: repeat the same arguments) an eventfd signalled on guest writes."""
        flags = ((IoeventfdFlag.DATAMATCH if datamatch is not None else 0)
                 | (IoeventfdFlag.PIO if pio else 0)
                 | (IoeventfdFlag.DEASSIGN if deassign else 0))
        arg = ffi.new("struct kvm_ioeventfd *", {
            "datamatch": datamatch or 0, "addr": addr, "len": length, "fd": fd, "flags": flags})
        match = "" if datamatch is None else f" datamatch={datamatch:#x}"
        self._ioctl("KVM_IOEVENTFD", arg, f"fd={fd} addr={addr:#x} len={length}{match} "
                                         f"flags={flag_names(IoeventfdFlag, flags)}")

    def register_coalesced_mmio(self, addr: int, size: int, pio: bool = False) -> None:
        self._coalesced("KVM_REGISTER_COALESCED_MMIO", addr, size, pio)

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: bool = False) -> None:
        self._coalesced("KVM_UNREGISTER_COALESCED_MMIO", addr, size, pio)

    def _coalesced(self, name: str, addr: int, size: int, pio: bool) -> None:
        zone = ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": addr, "size": size, "pio": pio})
        self._ioctl(name, zone, f"addr={addr:#x} size={size:#x} pio={int(pio)}")

    def get_dirty_log(self, slot: int, bitmap: bytearray | memoryview) -> None:
        """KVM_GET_DIRTY_LOG into the writable buffer *bitmap* (filled in place, no copy).

        Needs ``dirty_bitmap_bytes(slot size)`` bytes; checked for slots set through this Vm.
        """
        with _bitmap(slot, bitmap, self._slot_sizes.get(slot, 0), writable=True) as buf:
            log = ffi.new("struct kvm_dirty_log *", {"slot": slot, "dirty_bitmap": buf})
            self._ioctl("KVM_GET_DIRTY_LOG", log, _slot_desc(slot))

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int,
                        bitmap: bytes | bytearray | memoryview) -> None:
        """KVM_CLEAR_DIRTY_LOG (MANUAL_DIRTY_LOG_PROTECT2): re-protect the pages set in
        *bitmap*, whose bit 0 is *first_page* (a multiple of 64)."""
        with _bitmap(slot, bitmap, num_pages * PAGE_SIZE, writable=False) as buf:
            log = ffi.new("struct kvm_clear_dirty_log *", {
                "slot": slot, "first_page": first_page, "num_pages": num_pages,
                "dirty_bitmap": buf})
            self._ioctl("KVM_CLEAR_DIRTY_LOG", log,
                        f"{_slot_desc(slot)} first_page={first_page} num_pages={num_pages}")

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        """KVM_ENABLE_CAP on the VM with up to four arguments."""
        arg = ffi.new("struct kvm_enable_cap *", {"cap": cap, "flags": flags, "args": list(args)})
        self._ioctl("KVM_ENABLE_CAP", arg, f"cap={enum_name(Cap, cap)} args={list(args)}")

    def create_irqchip(self) -> None:
        self._ioctl("KVM_CREATE_IRQCHIP")

    def create_pit2(self, flags: int = 0) -> None:
        self._ioctl("KVM_CREATE_PIT2", ffi.new("struct kvm_pit_config *", {"flags": flags}))

    def set_tss_addr(self, addr: int) -> None:
        self._ioctl("KVM_SET_TSS_ADDR", addr, f"addr={addr:#x}")

    def set_identity_map_addr(self, addr: int) -> None:
        self._ioctl("KVM_SET_IDENTITY_MAP_ADDR", ffi.new("__u64 *", addr), f"addr={addr:#x}")

    def irq_line(self, irq: int, level: int) -> None:
        arg = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level})
        self._ioctl("KVM_IRQ_LINE", arg, f"irq={irq} level={level}")

    def reset_dirty_rings(self) -> int:
        """KVM_RESET_DIRTY_RINGS: re-protect harvested ring entries; returns how many."""
        return self._ioctl("KVM_RESET_DIRTY_RINGS")
