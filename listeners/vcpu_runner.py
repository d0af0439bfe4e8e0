"""The vCPU run loop: KVM exits handed to the memory and I/O AddressSpaces.

Data flows one way: exit -> AddressSpace -> FlatView lookup -> region ops.
PIO goes to the I/O space (``count`` accesses of ``size`` bytes at ``data_offset``),
MMIO to the memory space; HLT ends the run; faults raise typed exceptions that
carry the register state. Another thread stops a run with ``stop()`` or holds
the vCPU out of KVM_RUN with ``paused()`` (several at once with the module's
``paused(*runners)``). Writes queued in the coalesced MMIO ring are replayed, in
order, before each exit is handled.

A device callback that raises ends the run with a DeviceError (address, region,
the exception as ``__cause__``); with ``strict_unassigned`` an access nothing
claims ends it with an UnassignedAccess. Either way the exit is complete (a failed
read returns 0, an unassigned one QEMU's default), so ``run()`` may simply resume.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Optional

from kvm import COALESCED_RING_ENTRIES, ExitReason, IoDirection, Vcpu, ffi
from kvm.exit_records import MMIO_DATA_OFFSET
from memapi import UNASSIGNED_IO_OPS, UNASSIGNED_MEM_OPS, AddressSpace, MemoryRegion

from .errors import BridgeError, DirtyRingError

_IO, _MMIO, _HLT, _INTR = int(ExitReason.IO), int(ExitReason.MMIO), int(ExitReason.HLT), int(ExitReason.INTR)
_RING_FULL = int(ExitReason.DIRTY_RING_FULL)
_OUT = int(IoDirection.OUT)


class CoalescedRing:
    """The VM's coalesced MMIO/PIO ring (a page of every vCPU mapping), replayed in order.

    ``drain()`` is safe from any thread: it runs under the memory core's lock, and a
    drain started by a replayed write (a device that begins a transaction) is a no-op.
    """

    def __init__(self, vcpu: Vcpu, memory: AddressSpace, io: AddressSpace) -> None:
        self.ring = vcpu.coalesced_ring()
        self.memory = memory
        self.io = io
        self._draining = False

    def pending(self) -> int:
        """Entries queued by KVM and not yet replayed."""
        return (self.ring.last - self.ring.first) % COALESCED_RING_ENTRIES

    def drain(self) -> int:
        """Replay every queued write (PIO through the I/O space, MMIO through memory); returns how many."""
        ring = self.ring
        if ring.first == ring.last or self._draining:
            return 0
        with self.memory.system.lock:
            if self._draining:
                return 0
            self._draining = True
            try:
                count = 0
                while ring.first != ring.last:
                    entry = ring.coalesced_mmio[ring.first]
                    data = bytes(ffi.buffer(entry.data, entry.len))
                    (self.io if entry.pio else self.memory).write(entry.phys_addr, data)
                    ring.first = (ring.first + 1) % COALESCED_RING_ENTRIES
                    count += 1
                return count
            finally:
                self._draining = False


@dataclass(frozen=True)
class Registers:
    """The vCPU state a fault report carries (general registers plus CS/DS/SS)."""

    rip: int
    rsp: int
    rflags: int
    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    cs: tuple[int, int]  # (selector, base)
    ds: tuple[int, int]
    ss: tuple[int, int]

    @classmethod
    def of(cls, vcpu: Vcpu) -> "Registers":
        r, s = vcpu.get_regs(), vcpu.get_sregs()
        return cls(r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi,
                   (s.cs.selector, s.cs.base), (s.ds.selector, s.ds.base), (s.ss.selector, s.ss.base))

    def __str__(self) -> str:
        return (f"cs:ip={self.cs[0]:04x}:{self.rip:#06x} (linear {self.cs[1] + self.rip:#x}) "
                f"rax={self.rax:#x} rflags={self.rflags:#x}")


class GuestFault(BridgeError):
    """The guest stopped in a way that needs a report; ``registers`` holds its state."""

    def __init__(self, message: str, registers: Registers) -> None:
        super().__init__(f"{message} at {registers}")
        self.registers = registers


class TripleFault(GuestFault):
    """KVM_EXIT_SHUTDOWN: the guest triple-faulted."""


class EntryFailure(GuestFault):
    """KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the guest."""


class InternalError(GuestFault):
    """KVM_EXIT_INTERNAL_ERROR: KVM could not emulate an instruction."""


class GuestTimeout(GuestFault):
    """The run went on past its timeout and was stopped."""


class UnhandledExit(GuestFault):
    """An exit reason the run loop does not know."""


class GuestAccessFault(GuestFault):
    """A PIO or MMIO exit that could not be served as asked; ``space`` is "I/O" or "memory"."""

    def __init__(self, message: str, registers: Registers, space: str, address: int, size: int,
                 is_write: bool) -> None:
        super().__init__(message, registers)
        self.space, self.address, self.size, self.is_write = space, address, size, is_write


class DeviceError(GuestAccessFault):
    """A device callback raised; ``region`` is the region at ``address`` and ``__cause__`` the exception."""

    def __init__(self, message: str, registers: Registers, space: str, address: int, size: int,
                 is_write: bool, region: Optional[MemoryRegion]) -> None:
        super().__init__(message, registers, space, address, size, is_write)
        self.region = region


class UnassignedAccess(GuestAccessFault):
    """With ``strict_unassigned``: the guest touched an address no region claims."""


@dataclass
class RunOutcome:
    """Why ``run()`` returned: ``"hlt"``, ``"stopped"`` (stop()/exit request) and how many exits it handled."""

    reason: str
    exits: int


class VcpuRunner:
    """Runs one vCPU, dispatching its PIO and MMIO exits into two AddressSpaces.

    With ``strict_unassigned``, an access to an address no region claims (a hole, or a
    region with QEMU's unassigned ops) raises UnassignedAccess instead of reading
    0 (memory) or all ones (ports) and dropping writes, as QEMU does.
    """

    def __init__(self, vcpu: Vcpu, memory: AddressSpace, io: AddressSpace,
                 on_exit: Optional[Callable[[str, int, int, int, bool], None]] = None,
                 coalesced: Optional[CoalescedRing] = None, strict_unassigned: bool = False) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self.io = io
        self.on_exit = on_exit  # tracing hook: (kind, addr, value, size, is_write)
        self.coalesced = coalesced
        self.strict_unassigned = strict_unassigned
        #: Called on KVM_EXIT_DIRTY_RING_FULL; must reap and reset the dirty rings, returning the entries reaped.
        self.on_dirty_ring_full: Optional[Callable[[], int]] = None
        self._stop = threading.Event()
        self._thread: Optional[int] = None  # ident of the thread inside run()
        self._in_kvm_run = False
        self._pause_lock = threading.Lock()
        self._pause_depth = 0
        self._resumed = threading.Event()
        self._resumed.set()

    def stop(self) -> None:
        """Ask the loop to return after the current exit (safe from any thread)."""
        self._stop.set()
        self.vcpu.kick()

    @property
    def running(self) -> bool:
        """True while some thread is inside run()."""
        return self._thread is not None

    @property
    def in_kvm_run(self) -> bool:
        """True while the vCPU is inside KVM_RUN (running guest code), not handling an exit or held."""
        return self._in_kvm_run

    def paused(self) -> ContextManager[None]:
        """Hold this vCPU out of KVM_RUN for the block (see the module's ``paused``)."""
        return paused(self)

    def _hold(self) -> None:
        """Keep the loop from entering KVM_RUN again and kick a run in progress out (immediate_exit:
        a vCPU about to enter returns at once, running no guest code)."""
        with self._pause_lock:
            self._pause_depth += 1
            self._resumed.clear()
        if self._thread is not None:
            self.vcpu.kick()

    def _wait_out(self) -> None:
        while self._in_kvm_run:
            time.sleep(20e-6)

    def _release(self) -> None:
        with self._pause_lock:
            self._pause_depth -= 1
            if not self._pause_depth:
                self._resumed.set()

    def run(self, timeout: Optional[float] = None) -> RunOutcome:
        """Run until HLT, stop(), or the timeout (which raises GuestTimeout)."""
        self._stop.clear()
        self._thread = threading.get_ident()
        timer = None
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
            timer = threading.Timer(timeout, self.vcpu.kick)
            timer.daemon = True
            timer.start()
        try:
            return self._loop(deadline)
        finally:
            self._thread = None
            self._in_kvm_run = False
            if timer is not None:
                timer.cancel()
                timer.join()

    def _loop(self, deadline: Optional[float]) -> RunOutcome:
        vcpu, mapping = self.vcpu, self.vcpu.mapping
        io_exit, mmio_exit = vcpu.io_exit, vcpu.mmio_exit
        io_space, mem_space, trace = self.io, self.memory, self.on_exit
        stop, resumed, strict = self._stop, self._resumed, self.strict_unassigned
        run = vcpu.run
        ring = self.coalesced.ring if self.coalesced is not None else None
        exits = 0
        empty_reap = -1  # the exit whose ring-full reap found nothing
        while True:
            if not resumed.is_set() and self._wait_resumed():
                return RunOutcome("stopped", exits)
            self._in_kvm_run = True
            reason = run()
            self._in_kvm_run = False
            exits += 1
            if ring is not None and ring.first != ring.last:
                self.coalesced.drain()
            if reason == _IO or reason == _MMIO:
                try:
                    if reason == _IO:
                        direction, size, port, count, offset = io_exit()
                        if direction == _OUT:
                            for i in range(count):
                                at = offset + i * size
                                value = int.from_bytes(mapping[at:at + size], "little")
                                if trace is not None:
                                    trace("pio", port, value, size, True)
                                io_space.store(port, value, size)
                        else:
                            for i in range(count):
                                at = offset + i * size
                                value = io_space.load(port, size)
                                mapping[at:at + size] = value.to_bytes(size, "little")
                                if trace is not None:
                                    trace("pio", port, value, size, False)
                    else:
                        addr, data, length, is_write = mmio_exit()
                        if is_write:
                            value = int.from_bytes(data[:length], "little")
                            if trace is not None:
                                trace("mmio", addr, value, length, True)
                            mem_space.store(addr, value, length)
                        else:
                            value = mem_space.load(addr, length)
                            mapping[MMIO_DATA_OFFSET:MMIO_DATA_OFFSET + length] = value.to_bytes(length, "little")
                            if trace is not None:
                                trace("mmio", addr, value, length, False)
                except Exception as err:
                    raise self._device_error(reason, err) from err
                if strict:
                    self._check_assigned(reason)
            elif reason == _HLT:
                return RunOutcome("hlt", exits)
            elif reason == _RING_FULL and self.on_dirty_ring_full is not None:
                if not self.on_dirty_ring_full():
                    # Another thread may have reaped first; twice in a row it would only spin.
                    if empty_reap == exits - 1:
                        raise DirtyRingError(f"vcpu {vcpu.id}: KVM_EXIT_DIRTY_RING_FULL twice in a row with no "
                                             "entry to harvest: the kernel's ring and ours disagree")
                    empty_reap = exits
            elif reason == _INTR:
                if deadline is not None and time.monotonic() >= deadline and not stop.is_set():
                    raise GuestTimeout("the guest ran past its timeout", Registers.of(vcpu))
            else:
                self._fault(reason)
            if stop.is_set():
                return RunOutcome("stopped", exits)

    def _wait_resumed(self) -> bool:
        """Wait out a pause; True if stop() came first."""
        while not self._resumed.wait(0.05):
            if self._stop.is_set():
                return True
        return False

    def _access(self, reason: int) -> tuple[AddressSpace, int, int, bool]:
        """(space, address, size, is_write) of the PIO or MMIO exit in kvm_run."""
        rs = self.vcpu.run_struct
        if reason == _IO:
            return self.io, rs.io.port, rs.io.size, rs.io.direction == _OUT
        return self.memory, rs.mmio.phys_addr, rs.mmio.len, bool(rs.mmio.is_write)

    def _device_error(self, reason: int, err: Exception) -> DeviceError:
        """The report of a callback that raised; a read's data is zeroed so a resumed guest reads 0."""
        space, addr, size, is_write = self._access(reason)
        rs = self.vcpu.run_struct
        if not is_write:
            if reason == _IO:
                start = rs.io.data_offset
                self.vcpu.mapping[start:start + size * rs.io.count] = bytes(size * rs.io.count)
            else:
                ffi.memmove(rs.mmio.data, bytes(size), size)
        fr = space.current_map.lookup(addr)
        region = fr.mr if fr is not None else None
        kind = "PIO" if reason == _IO else "MMIO"
        return DeviceError(
            f"device error in region {region.name if region else None!r} on a {size}-byte {kind} "
            f"{'write' if is_write else 'read'} at {addr:#x}: {type(err).__name__}: {err}",
            Registers.of(self.vcpu), space.name, addr, size, is_write, region)

    def _check_assigned(self, reason: int) -> None:
        """strict_unassigned: raise once the exit is served if its address belongs to no region."""
        space, addr, size, is_write = self._access(reason)
        fr = space.current_map.lookup(addr)
        mr = fr.mr if fr is not None else None
        if mr is None or (not (mr.is_ram or mr.is_rom_device or mr.is_iommu)
                          and (mr.ops is UNASSIGNED_MEM_OPS or mr.ops is UNASSIGNED_IO_OPS)):
            kind = "port" if reason == _IO else "memory address"
            raise UnassignedAccess(
                f"{size}-byte {'write to' if is_write else 'read from'} unassigned {kind} {addr:#x} "
                f"(address space {space.name!r})", Registers.of(self.vcpu), space.name, addr, size, is_write)

    def _fault(self, reason: int) -> None:
        regs = Registers.of(self.vcpu)
        rs = self.vcpu.run_struct
        if reason == ExitReason.SHUTDOWN:
            raise TripleFault("triple fault (KVM_EXIT_SHUTDOWN)", regs)
        if reason == ExitReason.FAIL_ENTRY:
            code = rs.fail_entry.hardware_entry_failure_reason
            raise EntryFailure(f"KVM_EXIT_FAIL_ENTRY (hardware reason {code:#x})", regs)
        if reason == ExitReason.INTERNAL_ERROR:
            raise InternalError(f"KVM_EXIT_INTERNAL_ERROR (suberror {rs.internal.suberror})", regs)
        try:
            name = ExitReason(reason).name
        except ValueError:
            name = str(reason)
        raise UnhandledExit(f"unhandled exit {name}", regs)


@contextlib.contextmanager
def paused(*runners: VcpuRunner) -> Iterator[None]:
    """Hold every runner's vCPU out of KVM_RUN for the block (QEMU's accel_ioctl_inhibit_begin/end).

    All are kicked first, then waited for. A wait ends once a vCPU has left KVM_RUN, not once it
    has handled its exit, so a vCPU blocked on the memory core's lock cannot deadlock the caller;
    and no lock is held across the block. The caller's own vCPU is skipped: it is not in KVM_RUN.
    """
    me = threading.get_ident()
    held: list[VcpuRunner] = []
    try:
        for runner in runners:
            if runner._thread != me:
                runner._hold()
                held.append(runner)
        for runner in held:
            runner._wait_out()
        yield
    finally:
        for runner in held:
            runner._release()
