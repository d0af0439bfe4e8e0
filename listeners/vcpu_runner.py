"""The vCPU run loop: KVM exits handed to the memory and I/O AddressSpaces.

Data flows one way: exit -> AddressSpace -> FlatView lookup -> region ops.
PIO goes to the I/O space (``count`` accesses of ``size`` bytes at ``data_offset``),
MMIO to the memory space; HLT ends the run; faults raise typed exceptions that
carry the register state. Another thread stops a run with ``stop()``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from kvm import ExitReason, IoDirection, Vcpu, ffi
from memapi import AddressSpace

_IO, _MMIO, _HLT, _INTR = int(ExitReason.IO), int(ExitReason.MMIO), int(ExitReason.HLT), int(ExitReason.INTR)
_OUT = int(IoDirection.OUT)


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


class GuestFault(RuntimeError):
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


@dataclass
class RunOutcome:
    """Why ``run()`` returned: ``"hlt"``, ``"stopped"`` (stop()/exit request) and how many exits it handled."""

    reason: str
    exits: int


class VcpuRunner:
    """Runs one vCPU, dispatching its PIO and MMIO exits into two AddressSpaces."""

    def __init__(self, vcpu: Vcpu, memory: AddressSpace, io: AddressSpace,
                 on_exit: Optional[Callable[[str, int, int, int, bool], None]] = None) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self.io = io
        self.on_exit = on_exit  # tracing hook: (kind, addr, value, size, is_write)
        self._stop = threading.Event()
        self.exit_hooks: list[Callable[[], None]] = []

    def stop(self) -> None:
        """Ask the loop to return after the current exit (safe from any thread)."""
        self._stop.set()
        self.vcpu.kick()

    def run(self, timeout: Optional[float] = None) -> RunOutcome:
        """Run until HLT, stop(), or the timeout (which raises GuestTimeout)."""
        self._stop.clear()
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
            if timer is not None:
                timer.cancel()

    def _loop(self, deadline: Optional[float]) -> RunOutcome:
        vcpu, rs, mapping = self.vcpu, self.vcpu.run_struct, self.vcpu.mapping
        io_space, mem_space, hooks, trace = self.io, self.memory, self.exit_hooks, self.on_exit
        stop = self._stop
        run = vcpu.run
        exits = 0
        while True:
            reason = run()
            exits += 1
            for hook in hooks:
                hook()
            if reason == _IO:
                io = rs.io
                port, size, offset, count = io.port, io.size, io.data_offset, io.count
                if io.direction == _OUT:
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
            elif reason == _MMIO:
                mmio = rs.mmio
                addr, length = mmio.phys_addr, mmio.len
                if mmio.is_write:
                    value = int.from_bytes(ffi.buffer(mmio.data, length), "little")
                    if trace is not None:
                        trace("mmio", addr, value, length, True)
                    mem_space.store(addr, value, length)
                else:
                    value = mem_space.load(addr, length)
                    ffi.memmove(mmio.data, value.to_bytes(length, "little"), length)
                    if trace is not None:
                        trace("mmio", addr, value, length, False)
            elif reason == _HLT:
                return RunOutcome("hlt", exits)
            elif reason == _INTR:
                if deadline is not None and time.monotonic() >= deadline and not stop.is_set():
                    raise GuestTimeout("the guest ran past its timeout", Registers.of(vcpu))
            else:
                self._fault(reason)
            if stop.is_set():
                return RunOutcome("stopped", exits)

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
