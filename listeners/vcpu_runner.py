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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from kvm import COALESCED_RING_ENTRIES, ExitReason, IoDirection, Vcpu, ffi
from kvm.exit_records import MMIO_DATA_OFFSET
from kvm.fast_exit import MMIO_WRITE as _MMIO_WRITE
from kvm.fast_exit import PIO_IN as _PIO_IN
from kvm.fast_exit import PIO_OUT as _PIO_OUT
from kvm.fast_exit import RUN_FAILED as _RUN_FAILED
from kvm.fast_exit import RUN_STOPPED as _RUN_STOPPED
from kvm.fast_exit import run_decoded
from memapi import UNASSIGNED_IO_OPS, UNASSIGNED_MEM_OPS, AddressSpace, MemoryRegion
from memapi.exit_path import exit_load, exit_store

from .errors import BridgeError, DirtyRingError

_IO, _MMIO, _HLT = int(ExitReason.IO), int(ExitReason.MMIO), int(ExitReason.HLT)
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
        return int((self.ring.last - self.ring.first) % COALESCED_RING_ENTRIES)

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
    def of(cls, vcpu: Vcpu) -> Registers:
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
                 is_write: bool, region: MemoryRegion | None) -> None:
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
                 on_exit: Callable[[str, int, int, int, bool], None] | None = None,
                 coalesced: CoalescedRing | None = None, strict_unassigned: bool = False) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self.io = io
        self.on_exit = on_exit  # tracing hook: (kind, addr, value, size, is_write)
        self.coalesced = coalesced
        self.strict_unassigned = strict_unassigned
        #: Called on KVM_EXIT_DIRTY_RING_FULL; must reap and reset the dirty rings, returning the entries reaped.
        self.on_dirty_ring_full: Callable[[], int] | None = None
        self._stop = threading.Event()
        self._thread: int | None = None  # ident of the thread inside run()
        self._empty_reap = -1  # the exit whose ring-full reap found nothing
        vcpu.run_ctx.ring = coalesced.ring if coalesced is not None else ffi.NULL
        self._pause_lock = threading.Lock()
        self._pause_depth = 0
        self._resumed = threading.Event()
        self._resumed.set()

    def stop(self) -> None:
        """Ask the loop to return after the current exit (safe from any thread): the next KVM_RUN is
        not entered (or, in progress, is kicked out)."""
        self._stop.set()
        self.vcpu.run_ctx.stop = 1  # the loop's next call returns without entering KVM_RUN
        self.vcpu.kick()

    @property
    def running(self) -> bool:
        """True while some thread is inside run()."""
        return self._thread is not None

    @property
    def on_this_thread(self) -> bool:
        """True when the caller is this loop's own thread (a device callback of this vCPU)."""
        return self._thread == threading.get_ident()

    @property
    def in_kvm_run(self) -> bool:
        """True while the vCPU is inside KVM_RUN (running guest code), not handling an exit or held."""
        return self.vcpu.in_kvm_run

    def paused(self) -> AbstractContextManager[None]:
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
        while self.vcpu.in_kvm_run:
            time.sleep(20e-6)

    def _release(self) -> None:
        with self._pause_lock:
            self._pause_depth -= 1
            if not self._pause_depth:
                self._resumed.set()

    def run(self, timeout: float | None = None) -> RunOutcome:
        """Run until HLT, stop(), or the timeout (which raises GuestTimeout)."""
        self._stop.clear()
        self.vcpu.run_ctx.stop = 0
        self._thread = threading.get_ident()
        timer = None
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
            timer = threading.Timer(timeout, self.vcpu.kick)
            timer.daemon = True
            timer.start()
        try:
            with self.vcpu.kickable():
                return self._loop(deadline)
        finally:
            self._thread = None
            if timer is not None:
                timer.cancel()
                timer.join()

    def _loop(self, deadline: float | None) -> RunOutcome:
        """One C call per exit (kvm.fast_exit); plain PIO/MMIO go straight to the exit path.

        Nothing is checked per exit for stop(), pauses or the timeout: each of them kicks the
        vCPU, so the next KVM_RUN fails with EINTR and ``_interrupted`` looks at them then.
        Tracing and strict_unassigned turn decoding off: every exit takes ``_other``.
        """
        vcpu = self.vcpu
        ctx, crun = vcpu.run_ctx, run_decoded
        io, mem = self.io, self.memory
        store, load = exit_store, exit_load
        decode = int(self.on_exit is None and not self.strict_unassigned)
        pio_out, pio_in, mmio_write = _PIO_OUT, _PIO_IN, _MMIO_WRITE
        value = exits = 0
        if self._pause_depth and self._wait_resumed():
            return RunOutcome("stopped", exits)
        while True:
            rec = crun(ctx, value, decode)
            exits += 1
            kind = rec & 7
            if kind:
                try:
                    if kind == pio_out:
                        store(io.current_map, rec >> 8 & 0xFFFF, rec >> 32, rec >> 3 & 15)
                    elif kind == mmio_write:
                        store(mem.current_map, rec >> 12, ctx.value, rec >> 3 & 15)
                    elif kind == pio_in:
                        value = load(io.current_map, rec >> 8 & 0xFFFF, rec >> 3 & 15)
                    else:
                        value = load(mem.current_map, rec >> 12, rec >> 3 & 15)
                except Exception as err:
                    raise self._device_error(_IO if kind <= _PIO_IN else _MMIO, err) from err
                continue
            reason = rec >> 8 & 0xFF
            if reason == _RUN_STOPPED:  # no KVM_RUN since the last exit, whose ring was replayed
                return RunOutcome("stopped", exits - 1)
            outcome = (self._interrupted(rec >> 16, exits, deadline) if reason == _RUN_FAILED
                       else self._other(reason, exits))
            if outcome is not None:
                return outcome

    def _replay_coalesced(self) -> None:
        if self.coalesced is not None:
            self.coalesced.drain()

    def _interrupted(self, err: int, exits: int, deadline: float | None) -> RunOutcome | None:
        """KVM_RUN failed: a kick (stop, pause, timeout) or a signal; anything else raises KvmError.
        Queued coalesced writes are replayed first, so whoever kicked sees the devices up to date."""
        self.vcpu.interrupted(err)
        self._replay_coalesced()
        if self._stop.is_set() or (self._pause_depth and self._wait_resumed()):
            return RunOutcome("stopped", exits)
        if deadline is not None and time.monotonic() >= deadline:
            raise GuestTimeout("the guest ran past its timeout", Registers.of(self.vcpu))
        return None

    def _other(self, reason: int, exits: int) -> RunOutcome | None:
        """An exit read from kvm_run itself: queued coalesced writes first, then the exit."""
        self._replay_coalesced()
        if reason in (_IO, _MMIO):
            try:
                self._io_exit() if reason == _IO else self._mmio_exit()
            except Exception as err:
                raise self._device_error(reason, err) from err
            if self.strict_unassigned:
                self._check_assigned(reason)
        elif reason == _HLT:
            return RunOutcome("hlt", exits)
        elif reason == _RING_FULL and self.on_dirty_ring_full is not None:
            if not self.on_dirty_ring_full():
                # Another thread may have reaped first; twice in a row it would only spin.
                if self._empty_reap == exits - 1:
                    raise DirtyRingError(f"vcpu {self.vcpu.id}: KVM_EXIT_DIRTY_RING_FULL twice in a row with no "
                                         "entry to harvest: the kernel's ring and ours disagree")
                self._empty_reap = exits
        else:
            self._fault(reason)
        return None

    def _io_exit(self) -> None:
        """KVM_EXIT_IO: ``count`` accesses of ``size`` bytes at ``data_offset`` (string I/O batches)."""
        direction, size, port, count, offset = self.vcpu.io_exit()
        mapping, trace = self.vcpu.mapping, self.on_exit
        for at in range(offset, offset + count * size, size):
            if direction == _OUT:
                value = int.from_bytes(mapping[at:at + size], "little")
                if trace is not None:
                    trace("pio", port, value, size, True)
                exit_store(self.io.current_map, port, value, size)
            else:
                value = exit_load(self.io.current_map, port, size)
                mapping[at:at + size] = value.to_bytes(size, "little")
                if trace is not None:
                    trace("pio", port, value, size, False)

    def _mmio_exit(self) -> None:
        addr, data, length, is_write = self.vcpu.mmio_exit()
        trace = self.on_exit
        if is_write:
            value = int.from_bytes(data[:length], "little")
            if trace is not None:
                trace("mmio", addr, value, length, True)
            exit_store(self.memory.current_map, addr, value, length)
        else:
            value = exit_load(self.memory.current_map, addr, length)
            self.vcpu.mapping[MMIO_DATA_OFFSET:MMIO_DATA_OFFSET + length] = value.to_bytes(length, "little")
            if trace is not None:
                trace("mmio", addr, value, length, False)

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
