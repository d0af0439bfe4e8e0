"""Typed records of a KVM_RUN exit: everything KVM reported, copied out of kvm_run.

``Vcpu.exit_record()`` builds one after ``run()``. It reads field by field through cffi,
so it suits tools, tests and rare exits; the run loop's hot path keeps the one-call
unpack of ``kvm.exit_records`` (``Vcpu.io_exit``/``mmio_exit``).
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ._cdata import CData
from ._kvm_cffi import ffi
from .constants import ExitReason, InternalError, IoDirection, SystemEventType


@dataclass(frozen=True)
class ExitRecord:
    """An exit without a payload (HLT, SHUTDOWN, INTR, IRQ_WINDOW_OPEN, DIRTY_RING_FULL...)."""

    reason: ExitReason | int


@dataclass(frozen=True)
class IoExit(ExitRecord):
    """KVM_EXIT_IO: ``count`` elements of ``size`` bytes at ``port``; ``data`` holds every
    element (an OUT's values; an IN's are whatever the buffer held)."""

    direction: IoDirection
    size: int
    port: int
    count: int
    data: tuple[int, ...]


@dataclass(frozen=True)
class MmioExit(ExitRecord):
    phys_addr: int
    data: bytes  # ``len`` bytes: the value of a write
    is_write: bool


@dataclass(frozen=True)
class InternalErrorExit(ExitRecord):
    """KVM_EXIT_INTERNAL_ERROR: ``suberror`` and its ``ndata`` data words (EMULATION: the
    instruction bytes and more, per kernel)."""

    suberror: InternalError | int
    data: tuple[int, ...]


@dataclass(frozen=True)
class SystemEventExit(ExitRecord):
    type: SystemEventType | int
    data: tuple[int, ...]


@dataclass(frozen=True)
class FailEntryExit(ExitRecord):
    hardware_entry_failure_reason: int
    cpu: int


@dataclass(frozen=True)
class UnknownExit(ExitRecord):
    hardware_exit_reason: int


@dataclass(frozen=True)
class ExceptionExit(ExitRecord):
    exception: int
    error_code: int


@dataclass(frozen=True)
class HypercallExit(ExitRecord):
    nr: int
    args: tuple[int, ...]
    ret: int
    longmode: int


@dataclass(frozen=True)
class DebugExit(ExitRecord):
    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(frozen=True)
class TprAccessExit(ExitRecord):
    rip: int
    is_write: bool


@dataclass(frozen=True)
class MsrExit(ExitRecord):
    """KVM_EXIT_X86_RDMSR / WRMSR (user-space MSR exits): ``reason`` of the exit is the
    record's; ``msr_reason`` is KVM_MSR_EXIT_REASON_*."""

    index: int
    data: int
    msr_reason: int


def _words(array: CData, count: int) -> tuple[int, ...]:
    return tuple(int(v) for v in array[0:min(count, len(array))])


def _io(run: CData, mapping: memoryview, reason: int) -> ExitRecord:
    io = run.io
    raw = mapping[io.data_offset:io.data_offset + io.size * io.count]
    data = tuple(int.from_bytes(raw[i:i + io.size], "little") for i in range(0, len(raw), io.size))
    return IoExit(reason, IoDirection(io.direction), io.size, io.port, io.count, data)


def _enum(kind: type[enum.IntEnum], value: int) -> int:
    """The member for *value*, or *value* itself if the header has no name for it."""
    try:
        member: int = kind(value)
        return member
    except ValueError:
        return value


_DECODERS: dict[int, Callable[[CData, memoryview, int], ExitRecord]] = {
    ExitReason.IO: _io,
    ExitReason.MMIO: lambda run, _, r: MmioExit(
        r, run.mmio.phys_addr, bytes(ffi.buffer(run.mmio.data))[:run.mmio.len], bool(run.mmio.is_write)),
    ExitReason.INTERNAL_ERROR: lambda run, _, r: InternalErrorExit(
        r, _enum(InternalError, run.internal.suberror), _words(run.internal.data, run.internal.ndata)),
    ExitReason.SYSTEM_EVENT: lambda run, _, r: SystemEventExit(
        r, _enum(SystemEventType, run.system_event.type),
        _words(run.system_event.data, run.system_event.ndata)),
    ExitReason.FAIL_ENTRY: lambda run, _, r: FailEntryExit(
        r, run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu),
    ExitReason.UNKNOWN: lambda run, _, r: UnknownExit(r, run.hw.hardware_exit_reason),
    ExitReason.EXCEPTION: lambda run, _, r: ExceptionExit(r, run.ex.exception, run.ex.error_code),
    ExitReason.HYPERCALL: lambda run, _, r: HypercallExit(
        r, run.hypercall.nr, tuple(run.hypercall.args), run.hypercall.ret, run.hypercall.longmode),
    ExitReason.DEBUG: lambda run, _, r: DebugExit(
        r, run.debug.arch.exception, run.debug.arch.pc, run.debug.arch.dr6, run.debug.arch.dr7),
    ExitReason.TPR_ACCESS: lambda run, _, r: TprAccessExit(r, run.tpr_access.rip, bool(run.tpr_access.is_write)),
    ExitReason.X86_RDMSR: lambda run, _, r: MsrExit(r, run.msr.index, run.msr.data, run.msr.reason),
    ExitReason.X86_WRMSR: lambda run, _, r: MsrExit(r, run.msr.index, run.msr.data, run.msr.reason),
}


def exit_record(run: CData, mapping: memoryview) -> ExitRecord:
    """The record of the exit described by ``struct kvm_run`` *run* (mapped as *mapping*)."""
    reason = _enum(ExitReason, run.exit_reason)
    decoder = _DECODERS.get(reason)
    return ExitRecord(reason) if decoder is None else decoder(run, mapping, reason)
