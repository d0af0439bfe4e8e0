"""Vm: a VM fd (memory slots, ioeventfds, irqfds, coalesced MMIO, dirty logging, in-kernel
irqchip and PIT state, GSI routing, vCPU creation)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from . import _header
from ._cdata import CData
from ._fd import PAGE_SIZE, CheckExtension, FdObject
from ._kvm_cffi import ffi, lib
from .constants import Cap, IoeventfdFlag, IrqchipId, IrqfdFlag, MemFlag, X86Quirk, enum_name, flag_names
from .errors import KvmUnavailableError
from .irq import Route, describe, routing_table
from .state import ClockData, Irqchip, PitState
from .vcpu import Vcpu


def dirty_bitmap_bytes(memory_size: int) -> int:
    """Bytes KVM writes for a slot's dirty bitmap: one bit per page, in 64-bit words."""
    pages = memory_size // PAGE_SIZE
    return (pages + 63) // 64 * 8


def _slot_desc(slot: int) -> str:
    as_id = slot >> 16
    return f"slot={slot & 0xffff}" + (f" as_id={as_id}" if as_id else "")


def _region_desc(slot: int, guest_phys_addr: int, memory_size: int, userspace_addr: int, flags: int) -> str:
    return (f"{_slot_desc(slot)} gpa={guest_phys_addr:#x} size={memory_size:#x} "
            f"uaddr={userspace_addr:#x} flags={flag_names(MemFlag, flags)}")


def quirk_mask(quirks: Sequence[X86Quirk | str]) -> int:
    """The KVM_X86_QUIRK_* bits of *quirks* (members or names such as ``"LINT0_REENABLED"``)."""
    mask = 0
    for quirk in quirks:
        if isinstance(quirk, str):
            name = quirk.upper().removeprefix("KVM_X86_QUIRK_")
            if name not in X86Quirk.__members__:
                raise ValueError(f"KVM_CAP_DISABLE_QUIRKS2: no quirk {quirk!r} in linux/kvm.h "
                                 f"(known: {', '.join(X86Quirk.__members__)})")
            quirk = X86Quirk[name]
        mask |= quirk
    return mask


@contextmanager
def _bitmap(slot: int, bitmap: bytes | bytearray | memoryview, covered_bytes: int, writable: bool) -> Iterator[CData]:
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
        xsave_size = self.check_extension(Cap.XSAVE2)
        fd = self._ioctl("KVM_CREATE_VCPU", vcpu_id, f"id={vcpu_id}")
        return Vcpu(fd, vcpu_id, self.vcpu_mmap_size, xsave_size)

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory_size: int,
                               userspace_addr: int, flags: int = 0) -> None:
        """Add, move, re-flag or (memory_size=0) delete a slot; *slot* may carry as_id << 16."""
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": memory_size, "userspace_addr": userspace_addr})
        self._ioctl("KVM_SET_USER_MEMORY_REGION", region,
                    _region_desc(slot, guest_phys_addr, memory_size, userspace_addr, flags))
        self._record_slot(slot, memory_size)

    def _record_slot(self, slot: int, memory_size: int) -> None:
        if memory_size:
            self._slot_sizes[slot] = memory_size
        else:
            self._slot_sizes.pop(slot, None)

    def set_user_memory_region2(self, slot: int, guest_phys_addr: int, memory_size: int,
                                userspace_addr: int, flags: int = 0, guest_memfd: int = -1,
                                guest_memfd_offset: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION2: a slot that may be backed by a guest_memfd.
        KvmUnavailableError where the compiled header predates it (before Linux 6.8)."""
        if not _header.HAVE_SET_USER_MEMORY_REGION2:
            raise KvmUnavailableError("KVM_SET_USER_MEMORY_REGION2")
        region = ffi.new("struct kvm_userspace_memory_region2 *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr, "memory_size": memory_size,
            "userspace_addr": userspace_addr, "guest_memfd": max(guest_memfd, 0),
            "guest_memfd_offset": guest_memfd_offset})
        self._ioctl("KVM_SET_USER_MEMORY_REGION2", region,
                    _region_desc(slot, guest_phys_addr, memory_size, userspace_addr, flags)
                    + (f" guest_memfd={guest_memfd} offset={guest_memfd_offset:#x}" if guest_memfd >= 0 else ""))
        self._record_slot(slot, memory_size)

    def create_guest_memfd(self, size: int, flags: int = 0) -> int:
        """KVM_CREATE_GUEST_MEMFD: a new fd of guest-private memory (the caller closes it).
        KvmUnavailableError where the compiled header predates it."""
        if not _header.HAVE_CREATE_GUEST_MEMFD:
            raise KvmUnavailableError("KVM_CREATE_GUEST_MEMFD")
        arg = ffi.new("struct kvm_create_guest_memfd *", {"size": size, "flags": flags})
        return self._ioctl("KVM_CREATE_GUEST_MEMFD", arg, f"size={size:#x} flags={flags:#x}")

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

    def assign_irqfd(self, fd: int, gsi: int, resamplefd: int | None = None) -> None:
        """KVM_IRQFD: a write to eventfd *fd* raises *gsi*. With *resamplefd* the line is
        level-triggered: KVM lowers it on the guest's EOI and signals *resamplefd*, and the
        device re-raises it through *fd* if still asserted."""
        flags = IrqfdFlag.RESAMPLE if resamplefd is not None else 0
        self._irqfd(fd, gsi, flags, resamplefd or 0)

    def deassign_irqfd(self, fd: int, gsi: int) -> None:
        self._irqfd(fd, gsi, IrqfdFlag.DEASSIGN, 0)

    def _irqfd(self, fd: int, gsi: int, flags: int, resamplefd: int) -> None:
        arg = ffi.new("struct kvm_irqfd *", {"fd": fd, "gsi": gsi, "flags": flags, "resamplefd": resamplefd})
        resample = f" resamplefd={resamplefd}" if flags & IrqfdFlag.RESAMPLE else ""
        self._ioctl("KVM_IRQFD", arg, f"fd={fd} gsi={gsi}{resample} flags={flag_names(IrqfdFlag, flags)}")

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

    def reinject_control(self, pit_reinject: bool) -> None:
        """KVM_REINJECT_CONTROL: whether the in-kernel PIT re-injects lost ticks (QEMU's kvm-pit
        lost_tick_policy: ``delay`` re-injects, ``discard`` does not)."""
        arg = ffi.new("struct kvm_reinject_control *", {"pit_reinject": int(pit_reinject)})
        self._ioctl("KVM_REINJECT_CONTROL", arg, f"pit_reinject={int(pit_reinject)}")

    def set_tss_addr(self, addr: int) -> None:
        self._ioctl("KVM_SET_TSS_ADDR", addr, f"addr={addr:#x}")

    def set_identity_map_addr(self, addr: int) -> None:
        self._ioctl("KVM_SET_IDENTITY_MAP_ADDR", ffi.new("__u64 *", addr), f"addr={addr:#x}")

    def irq_line(self, irq: int, level: int) -> None:
        arg = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level})
        self._ioctl("KVM_IRQ_LINE", arg, f"irq={irq} level={level}")

    def irq_line_status(self, irq: int, level: int) -> int:
        """KVM_IRQ_LINE_STATUS: like irq_line, returning the delivery status QEMU uses to
        detect coalesced interrupts (> 0 delivered, 0 coalesced, < 0 masked)."""
        arg = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level})
        self._ioctl("KVM_IRQ_LINE_STATUS", arg, f"irq={irq} level={level}")
        return int(ffi.cast("__s32", arg.irq))

    def signal_msi(self, address: int, data: int, devid: int | None = None) -> int:
        """KVM_SIGNAL_MSI: inject one MSI; returns > 0 delivered, 0 blocked by the guest.
        KvmError EPERM (the kernel's -1) when no local APIC accepts it (no such vCPU)."""
        arg = ffi.new("struct kvm_msi *", {
            "address_lo": address & 0xFFFFFFFF, "address_hi": address >> 32, "data": data,
            "flags": 0 if devid is None else lib.KVM_MSI_VALID_DEVID, "devid": devid or 0})
        return self._ioctl("KVM_SIGNAL_MSI", arg, f"address={address:#x} data={data:#x}")

    def set_gsi_routing(self, routes: Sequence[Route]) -> None:
        """KVM_SET_GSI_ROUTING: replace the whole GSI routing table with *routes*."""
        table = routing_table(routes)
        self._ioctl("KVM_SET_GSI_ROUTING", table,
                    f"nr={len(routes)} " + " ".join(describe(r) for r in routes[:4])
                    + (" ..." if len(routes) > 4 else ""))

    def disable_quirks(self, *quirks: X86Quirk | str) -> None:
        """KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2) with the named quirks."""
        self.enable_cap(Cap.DISABLE_QUIRKS2, quirk_mask(quirks))

    def set_nr_mmu_pages(self, pages: int) -> None:
        self._ioctl("KVM_SET_NR_MMU_PAGES", pages, f"pages={pages}")

    def get_nr_mmu_pages(self) -> int:
        return self._ioctl("KVM_GET_NR_MMU_PAGES")

    def get_irqchip(self, chip: IrqchipId) -> Irqchip:
        """KVM_GET_IRQCHIP of the master PIC, the slave PIC or the IOAPIC."""
        state = Irqchip()
        state.c.chip_id = chip
        self._ioctl("KVM_GET_IRQCHIP", state.c, f"chip={enum_name(IrqchipId, chip)}")
        return state

    def set_irqchip(self, state: Irqchip) -> None:
        self._set_state("KVM_SET_IRQCHIP", Irqchip, state, f"chip={enum_name(IrqchipId, state.c.chip_id)}")

    def get_pit2(self) -> PitState:
        return self._get_state("KVM_GET_PIT2", PitState)

    def set_pit2(self, state: PitState) -> None:
        self._set_state("KVM_SET_PIT2", PitState, state)

    def get_clock(self) -> ClockData:
        return self._get_state("KVM_GET_CLOCK", ClockData)

    def set_clock(self, state: ClockData) -> None:
        """KVM_SET_CLOCK; only ``clock`` (and ``realtime`` with ClockFlag.REALTIME) is used."""
        self._set_state("KVM_SET_CLOCK", ClockData, state, f"clock={state.clock}")

    def reset_dirty_rings(self) -> int:
        """KVM_RESET_DIRTY_RINGS: re-protect harvested ring entries; returns how many."""
        return self._ioctl("KVM_RESET_DIRTY_RINGS")
