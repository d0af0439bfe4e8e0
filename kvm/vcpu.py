"""Vcpu: a vCPU fd and its kvm_run mapping; run(), registers, state for migration, kick(), rings."""
from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

from . import x86
from ._cdata import CData
from ._fd import PAGE_SIZE
from ._kvm_cffi import ffi, lib
from .constants import ExitReason, MpState, SyncReg, enum_name
from .cpuid import CpuidEntry, entries_of, new_table
from .errors import KvmError
from .exit_records import IO_OFFSET, IO_RECORD, MMIO_DATA_OFFSET, MMIO_OFFSET, MMIO_RECORD
from .exits import ExitRecord, exit_record
from .fast_exit import RUN_FAILED, exit_reason, run_decoded, run_errno
from .msrs import MsrIoctls
from .registers import Registers, SpecialRegisters, registers_of, special_registers_of, updated
from .rings import COALESCED_RING_ENTRIES
from .state import DebugRegs, Fpu, Lapic, VcpuEvents, Xcrs, Xsave

__all__ = ["COALESCED_RING_ENTRIES", "KICK_SIGNAL", "Vcpu", "install_kick_handler"]

KICK_SIGNAL = signal.SIGUSR1
_RETRYABLE = (errno.EINTR, errno.EAGAIN)
_EXIT_INTR = int(ExitReason.INTR)
#: Start size of the KVM_GET_CPUID2 table (the kernel reports the size it needs on E2BIG).
_CPUID_START = 64


def _on_kick(signum: int, frame: object) -> None:
    """No-op: delivering the signal is what interrupts KVM_RUN."""


def install_kick_handler() -> None:
    """Install a no-op handler for KICK_SIGNAL unless a Python handler is already set.

    Must run in the main thread (Vcpu() does it there automatically).
    """
    if not callable(signal.getsignal(KICK_SIGNAL)):
        signal.signal(KICK_SIGNAL, _on_kick)


class Vcpu(MsrIoctls):
    """A vCPU fd. ``run_struct`` is the ``struct kvm_run *`` and ``mapping`` a writable
    memoryview of the whole vCPU mapping; both are invalid after close().

    *xsave_size* is the VM's KVM_CAP_XSAVE2 value: above 4096, get_xsave() uses
    KVM_GET_XSAVE2 for the larger image.
    """

    def __init__(self, fd: int, vcpu_id: int, mmap_size: int, xsave_size: int = 0) -> None:
        super().__init__(fd)
        self.id = vcpu_id
        self._xsave_size = xsave_size
        try:
            base = self._mmap(mmap_size, 0, "kvm_run")
        except OSError:
            self.close()
            raise
        self.run_struct: CData = ffi.cast("struct kvm_run *", base)
        #: What kvm.fast_exit.run_decoded needs: the fd, kvm_run, an in-KVM_RUN flag and (set by its
        #: user) the VM's coalesced ring, so that exits with entries queued come back undecoded.
        self.run_ctx: CData = ffi.new("struct kvmshim_run_ctx *", {"fd": fd, "run": self.run_struct})
        self.mapping = memoryview(ffi.buffer(self.run_struct, mmap_size))
        #: io_exit() -> (direction, size, port, count, data_offset); mmio_exit() -> (phys_addr, data, len, is_write)
        self.io_exit: Any = partial(IO_RECORD.unpack_from, self.mapping, IO_OFFSET)
        self.mmio_exit: Any = partial(MMIO_RECORD.unpack_from, self.mapping, MMIO_OFFSET)
        self._dirty_ring: CData | None = None
        self._runner: int | None = None  # ident of the thread running this vCPU (kickable())
        self._kick_lock = threading.Lock()
        if threading.current_thread() is threading.main_thread():
            install_kick_handler()

    def close(self) -> None:
        if not self.closed:
            self.io_exit = self.mmio_exit = None
            self.mapping.release()
            self.run_struct = self._dirty_ring = self.run_ctx = None
        super().close()

    @property
    def _desc(self) -> str:
        return f"vcpu={self.id}"

    def run(self) -> int:
        """KVM_RUN; returns ``run_struct.exit_reason`` (compare with ExitReason members).

        EINTR/EAGAIN (a signal, kick() or immediate_exit) return ExitReason.INTR and clear
        ``immediate_exit``; any other failure raises KvmError. (Run loops use
        kvm.fast_exit.run_decoded inside ``kickable()`` instead: one C call per exit.)
        """
        self.run_ctx.stop = 0  # a run loop's stop request (its own flag) is not this call's
        with self.kickable():
            rec = run_decoded(self.run_ctx, 0, 0)
        if exit_reason(rec) != RUN_FAILED:
            return exit_reason(rec)
        return self.interrupted(run_errno(rec))

    def interrupted(self, err: int) -> int:
        """After KVM_RUN failed with ``err``: ExitReason.INTR (immediate_exit cleared) for a kick or
        signal, else KvmError."""
        if err in _RETRYABLE:
            self.run_struct.immediate_exit = 0
            return _EXIT_INTR
        raise KvmError("KVM_RUN", err, self._desc)

    def exit_record(self) -> ExitRecord:
        """The last exit as a typed record (IoExit, MmioExit, InternalErrorExit...)."""
        return exit_record(self.run_struct, self.mapping)

    @contextmanager
    def kickable(self) -> Iterator[None]:
        """While this block runs the vCPU in this thread, kick() signals the thread (so a KVM_RUN in
        progress returns EINTR); outside it kick() only sets immediate_exit."""
        with self._kick_lock:
            self._runner = threading.get_ident()
        try:
            yield
        finally:
            with self._kick_lock:
                self._runner = None

    @property
    def in_kvm_run(self) -> bool:
        """True while a thread is inside KVM_RUN on this vCPU (running guest code)."""
        return bool(self.run_ctx.in_run)

    def kick(self) -> None:
        """From any thread: make the current or next run() return ExitReason.INTR promptly."""
        if not callable(signal.getsignal(KICK_SIGNAL)):
            raise RuntimeError(f"no handler for {KICK_SIGNAL!r}: call install_kick_handler() "
                               "from the main thread")
        self.run_struct.immediate_exit = 1
        with self._kick_lock:
            if self._runner is not None:
                signal.pthread_kill(self._runner, KICK_SIGNAL)

    @property
    def immediate_exit(self) -> bool:
        return bool(self.run_struct.immediate_exit)

    @immediate_exit.setter
    def immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = int(value)

    def io_data(self) -> memoryview:
        """The KVM_EXIT_IO data: ``io.count`` elements of ``io.size`` bytes, writable for IN."""
        io = self.run_struct.io
        return self.mapping[io.data_offset:io.data_offset + io.size * io.count]

    def mmio_data(self) -> memoryview:
        """The KVM_EXIT_MMIO data (``mmio.len`` bytes), writable for reads."""
        return self.mapping[MMIO_DATA_OFFSET:MMIO_DATA_OFFSET + self.run_struct.mmio.len]

    # ------------------------------------------------------------ registers
    def get_regs(self) -> CData:
        """KVM_GET_REGS into a new ``struct kvm_regs *``."""
        regs = ffi.new("struct kvm_regs *")
        self._ioctl("KVM_GET_REGS", regs, self._desc)
        return regs

    def set_regs(self, regs: CData) -> None:
        self._ioctl("KVM_SET_REGS", regs, self._desc)

    def get_sregs(self) -> CData:
        """KVM_GET_SREGS into a new ``struct kvm_sregs *``."""
        sregs = ffi.new("struct kvm_sregs *")
        self._ioctl("KVM_GET_SREGS", sregs, self._desc)
        return sregs

    def set_sregs(self, sregs: CData) -> None:
        self._ioctl("KVM_SET_SREGS", sregs, self._desc)

    def registers(self) -> Registers:
        """KVM_GET_REGS as plain ints."""
        return registers_of(self.get_regs())

    def set_registers(self, **regs: int) -> None:
        """Change the named general registers (``rip=0x1000, rax=1``); the others keep their values."""
        values = updated(Registers, self.registers(), regs)
        self.set_regs(ffi.new("struct kvm_regs *", values))

    def special_registers(self) -> SpecialRegisters:
        """KVM_GET_SREGS as plain ints and dataclasses."""
        return special_registers_of(self.get_sregs())

    def set_special_registers(self, **sregs: Any) -> None:
        """Change the named special registers; a segment may be a Segment or a mapping of the
        fields to change (``cs={"selector": 0x10, "base": 0}``)."""
        values = updated(SpecialRegisters, self.special_registers(), sregs)
        self.set_sregs(ffi.new("struct kvm_sregs *", values))

    def set_real_mode(self, cs: int, ip: int, *, ds: int | None = None, ss: int | None = None,
                      sp: int = 0) -> None:
        """Start at cs:ip in real mode; ES/FS/GS follow DS; DS and SS default to CS."""
        ds = cs if ds is None else ds
        sregs = self.get_sregs()
        x86.load_real_mode(sregs, cs, cs << 4, ds, ds if ss is None else ss)
        self._enter(sregs, ip, sp)

    def reset_state(self) -> None:
        """The x86 reset state (CS f000 base ffff0000, IP fff0), as a BIOS guest expects."""
        sregs = self.get_sregs()
        x86.load_reset_state(sregs)
        self._enter(sregs, x86.RESET_IP, 0)

    def _enter(self, sregs: CData, ip: int, sp: int) -> None:
        self.set_sregs(sregs)
        self.set_regs(ffi.new("struct kvm_regs *",
                              {"rip": ip, "rsp": sp, "rflags": x86.RFLAGS_RESET}))

    @property
    def sync_regs(self) -> SyncReg:
        """Register sets KVM copies into ``run_struct.s.regs`` at every exit (kvm_valid_regs)."""
        return SyncReg(self.run_struct.kvm_valid_regs)

    @sync_regs.setter
    def sync_regs(self, mask: int) -> None:
        self.run_struct.kvm_valid_regs = mask

    @property
    def synced_regs(self) -> CData:
        """``struct kvm_regs`` inside kvm_run (valid after an exit with SyncReg.REGS enabled)."""
        return self.run_struct.s.regs.regs

    @property
    def synced_sregs(self) -> CData:
        return self.run_struct.s.regs.sregs

    def mark_synced_dirty(self, mask: int) -> None:
        """Have the next KVM_RUN load the edited synced register sets in *mask*."""
        self.run_struct.kvm_dirty_regs |= mask

    # ------------------------------------------------------------ MSRs and CPUID
    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS: {index: value}. The kernel stops at the first MSR it refuses:
        MsrAccessError names it and carries the values read before it."""
        return self._get_msrs(indices, self._desc)

    def set_msrs(self, values: Mapping[int, int]) -> None:
        """KVM_SET_MSRS of {index: value}, in order. MsrAccessError names the first MSR
        refused; the writes before it took effect (``completed``)."""
        self._set_msrs(values, self._desc)

    def set_cpuid2(self, entries: list[CpuidEntry]) -> None:
        """KVM_SET_CPUID2: the CPUID table the guest sees (without it every leaf reads 0)."""
        self._ioctl("KVM_SET_CPUID2", new_table(entries), f"{self._desc} nent={len(entries)}")

    def get_cpuid2(self) -> list[CpuidEntry]:
        """KVM_GET_CPUID2: the table last set (E2BIG tells the size needed)."""
        return entries_of(self._grow("KVM_GET_CPUID2", new_table, lambda t: int(t.nent),
                                     _CPUID_START, self._desc))

    # ------------------------------------------------------------ state (migration)
    def get_vcpu_events(self) -> VcpuEvents:
        return self._get_state("KVM_GET_VCPU_EVENTS", VcpuEvents, self._desc)

    def set_vcpu_events(self, events: VcpuEvents) -> None:
        self._set_state("KVM_SET_VCPU_EVENTS", VcpuEvents, events, self._desc)

    def get_fpu(self) -> Fpu:
        return self._get_state("KVM_GET_FPU", Fpu, self._desc)

    def set_fpu(self, fpu: Fpu) -> None:
        self._set_state("KVM_SET_FPU", Fpu, fpu, self._desc)

    def get_xsave(self) -> Xsave:
        """KVM_GET_XSAVE, or KVM_GET_XSAVE2 when the VM's image is larger than 4096 bytes."""
        if self._xsave_size > ffi.sizeof("struct kvm_xsave"):
            return self._get_state("KVM_GET_XSAVE2", Xsave, self._desc, self._xsave_size)
        return self._get_state("KVM_GET_XSAVE", Xsave, self._desc)

    def set_xsave(self, xsave: Xsave) -> None:
        self._set_state("KVM_SET_XSAVE", Xsave, xsave, self._desc)

    def get_xcrs(self) -> Xcrs:
        return self._get_state("KVM_GET_XCRS", Xcrs, self._desc)

    def set_xcrs(self, xcrs: Xcrs) -> None:
        self._set_state("KVM_SET_XCRS", Xcrs, xcrs, self._desc)

    def get_lapic(self) -> Lapic:
        """KVM_GET_LAPIC (needs the in-kernel irqchip)."""
        return self._get_state("KVM_GET_LAPIC", Lapic, self._desc)

    def set_lapic(self, lapic: Lapic) -> None:
        self._set_state("KVM_SET_LAPIC", Lapic, lapic, self._desc)

    def get_debugregs(self) -> DebugRegs:
        return self._get_state("KVM_GET_DEBUGREGS", DebugRegs, self._desc)

    def set_debugregs(self, debugregs: DebugRegs) -> None:
        self._set_state("KVM_SET_DEBUGREGS", DebugRegs, debugregs, self._desc)

    def get_mp_state(self) -> MpState:
        state = ffi.new("struct kvm_mp_state *")
        self._ioctl("KVM_GET_MP_STATE", state, self._desc)
        return MpState(state.mp_state)

    def set_mp_state(self, mp_state: MpState | int) -> None:
        arg = ffi.new("struct kvm_mp_state *", {"mp_state": mp_state})
        self._ioctl("KVM_SET_MP_STATE", arg, f"{self._desc} mp_state={enum_name(MpState, mp_state)}")

    def get_tsc_khz(self) -> int:
        return self._ioctl("KVM_GET_TSC_KHZ", 0, self._desc)

    def set_tsc_khz(self, khz: int) -> None:
        self._ioctl("KVM_SET_TSC_KHZ", khz, f"{self._desc} khz={khz}")

    # ------------------------------------------------------------ rings
    def coalesced_ring(self) -> CData:
        """``struct kvm_coalesced_mmio_ring *`` (COALESCED_RING_ENTRIES entries); see
        kvm.CoalescedMmioRing for a reader."""
        base = ffi.cast("char *", self.run_struct)
        return ffi.cast("struct kvm_coalesced_mmio_ring *",
                        base + lib.KVM_COALESCED_MMIO_PAGE_OFFSET * PAGE_SIZE)

    def dirty_ring(self, entries: int) -> CData:
        """``struct kvm_dirty_gfn *`` of *entries* entries, mapped by the first call. The VM
        must have enabled Cap.DIRTY_LOG_RING(_ACQ_REL) with
        ``entries * ffi.sizeof("struct kvm_dirty_gfn")`` bytes before creating this vCPU;
        see kvm.DirtyRing for a harvester."""
        if self._dirty_ring is None:
            size = entries * ffi.sizeof("struct kvm_dirty_gfn")
            addr = self._mmap(size, lib.KVM_DIRTY_LOG_PAGE_OFFSET, "dirty ring")
            self._dirty_ring = ffi.cast("struct kvm_dirty_gfn *", addr)
        return self._dirty_ring
