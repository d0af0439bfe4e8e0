"""Vcpu: a vCPU fd and its kvm_run mapping; run(), registers, kick(), rings."""
from __future__ import annotations

import errno
import signal
import threading
from contextlib import contextmanager
from functools import partial
from typing import Iterator

from . import x86
from ._fd import PAGE_SIZE, CData, FdObject
from .exit_records import IO_OFFSET, IO_RECORD, MMIO_DATA_OFFSET, MMIO_OFFSET, MMIO_RECORD
from ._kvm_cffi import ffi, lib
from .constants import ExitReason, SyncReg
from .errors import KvmError
from .fast_exit import RUN_FAILED, run_decoded

KICK_SIGNAL = signal.SIGUSR1
#: Entries in the coalesced MMIO ring page.
COALESCED_RING_ENTRIES = (PAGE_SIZE - ffi.sizeof("struct kvm_coalesced_mmio_ring")) // ffi.sizeof(
    "struct kvm_coalesced_mmio")
_RETRYABLE = (errno.EINTR, errno.EAGAIN)
_EXIT_INTR = int(ExitReason.INTR)


def _on_kick(signum: int, frame: object) -> None:
    """No-op: delivering the signal is what interrupts KVM_RUN."""


def install_kick_handler() -> None:
    """Install a no-op handler for KICK_SIGNAL unless a Python handler is already set.

    Must run in the main thread (Vcpu() does it there automatically).
    """
    if not callable(signal.getsignal(KICK_SIGNAL)):
        signal.signal(KICK_SIGNAL, _on_kick)


class Vcpu(FdObject):
    """A vCPU fd. ``run_struct`` is the ``struct kvm_run *`` and ``mapping`` a writable
    memoryview of the whole vCPU mapping; both are invalid after close()."""

    def __init__(self, fd: int, vcpu_id: int, mmap_size: int) -> None:
        super().__init__(fd)
        self.id = vcpu_id
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
        self.io_exit = partial(IO_RECORD.unpack_from, self.mapping, IO_OFFSET)
        self.mmio_exit = partial(MMIO_RECORD.unpack_from, self.mapping, MMIO_OFFSET)
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

    def run(self) -> int:
        """KVM_RUN; returns ``run_struct.exit_reason`` (compare with ExitReason members).

        EINTR/EAGAIN (a signal, kick() or immediate_exit) return ExitReason.INTR and clear
        ``immediate_exit``; any other failure raises KvmError. (Run loops use
        kvm.fast_exit.run_decoded inside ``kickable()`` instead: one C call per exit.)
        """
        with self.kickable():
            rec = run_decoded(self.run_ctx, 0, 0)
        if rec >> 8 & 0xFF != RUN_FAILED:
            return rec >> 8
        return self.interrupted(rec >> 16)

    def interrupted(self, err: int) -> int:
        """After KVM_RUN failed with ``err``: ExitReason.INTR (immediate_exit cleared) for a kick or
        signal, else KvmError."""
        if err in _RETRYABLE:
            self.run_struct.immediate_exit = 0
            return _EXIT_INTR
        raise KvmError("KVM_RUN", err, f"vcpu={self.id}")

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

    def get_regs(self) -> CData:
        """KVM_GET_REGS into a new ``struct kvm_regs *``."""
        regs = ffi.new("struct kvm_regs *")
        self._ioctl("KVM_GET_REGS", regs, f"vcpu={self.id}")
        return regs

    def set_regs(self, regs: CData) -> None:
        self._ioctl("KVM_SET_REGS", regs, f"vcpu={self.id}")

    def get_sregs(self) -> CData:
        """KVM_GET_SREGS into a new ``struct kvm_sregs *``."""
        sregs = ffi.new("struct kvm_sregs *")
        self._ioctl("KVM_GET_SREGS", sregs, f"vcpu={self.id}")
        return sregs

    def set_sregs(self, sregs: CData) -> None:
        self._ioctl("KVM_SET_SREGS", sregs, f"vcpu={self.id}")

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

    def coalesced_ring(self) -> CData:
        """``struct kvm_coalesced_mmio_ring *`` (COALESCED_RING_ENTRIES entries)."""
        base = ffi.cast("char *", self.run_struct)
        return ffi.cast("struct kvm_coalesced_mmio_ring *",
                        base + lib.KVM_COALESCED_MMIO_PAGE_OFFSET * PAGE_SIZE)

    def dirty_ring(self, entries: int) -> CData:
        """``struct kvm_dirty_gfn *`` of *entries* entries, mapped by the first call. The VM
        must have enabled Cap.DIRTY_LOG_RING(_ACQ_REL) with
        ``entries * ffi.sizeof("struct kvm_dirty_gfn")`` bytes before creating this vCPU."""
        if self._dirty_ring is None:
            size = entries * ffi.sizeof("struct kvm_dirty_gfn")
            addr = self._mmap(size, lib.KVM_DIRTY_LOG_PAGE_OFFSET, "dirty ring")
            self._dirty_ring = ffi.cast("struct kvm_dirty_gfn *", addr)
        return self._dirty_ring
