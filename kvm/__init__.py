"""Thin cffi binding of /dev/kvm: one class per fd (Kvm -> Vm -> Vcpu), in the style of rust-vmm's kvm-ioctls.

Every number comes from linux/kvm.h through the compiled binding ``kvm._kvm_cffi``
(``ffi``/``lib``), which callers may use directly for struct access; the enums are
generated from it at build time (``kvm/_header.py``). See docs/kvm.md.
"""
from ._cdata import to_python
from ._header import HAVE_CREATE_GUEST_MEMFD, HAVE_SET_USER_MEMORY_REGION2, IOCTL_NAMES
from ._kvm_cffi import ffi, lib
from .constants import (
    Cap,
    ClockFlag,
    DirtyGfnFlag,
    DirtyLogFlag,
    ExitReason,
    InternalError,
    IoDirection,
    IoeventfdFlag,
    IrqchipId,
    IrqfdFlag,
    IrqRoutingType,
    MemFlag,
    MpState,
    SyncReg,
    SystemEventType,
    VcpuEventValid,
    X86Quirk,
)
from .cpuid import CpuidEntry
from .errors import KvmError, KvmUnavailableError, MsrAccessError
from .exits import (
    DebugExit,
    ExceptionExit,
    ExitRecord,
    FailEntryExit,
    HypercallExit,
    InternalErrorExit,
    IoExit,
    MmioExit,
    MsrExit,
    SystemEventExit,
    TprAccessExit,
    UnknownExit,
)
from .irq import IrqchipRoute, MsiRoute, Route
from .registers import DescriptorTable, Registers, Segment, SpecialRegisters
from .rings import COALESCED_RING_ENTRIES, CoalescedEntry, CoalescedMmioRing, DirtyRing
from .state import ClockData, DebugRegs, Fpu, Irqchip, KvmState, Lapic, PitState, VcpuEvents, Xcrs, Xsave
from .system import Kvm
from .vcpu import KICK_SIGNAL, Vcpu, install_kick_handler
from .vm import Vm, dirty_bitmap_bytes

__all__ = [
    "COALESCED_RING_ENTRIES", "Cap", "ClockData", "ClockFlag", "CoalescedEntry", "CoalescedMmioRing",
    "CpuidEntry", "DebugExit", "DebugRegs", "DescriptorTable", "DirtyGfnFlag", "DirtyLogFlag",
    "DirtyRing", "ExceptionExit", "ExitReason", "ExitRecord", "FailEntryExit", "Fpu",
    "HAVE_CREATE_GUEST_MEMFD", "HAVE_SET_USER_MEMORY_REGION2", "HypercallExit", "IOCTL_NAMES", "InternalError",
    "InternalErrorExit", "IoDirection", "IoExit",
    "IoeventfdFlag", "Irqchip", "IrqchipId", "IrqchipRoute", "IrqfdFlag", "IrqRoutingType",
    "KICK_SIGNAL", "Kvm", "KvmError", "KvmState", "KvmUnavailableError", "Lapic", "MemFlag",
    "MmioExit", "MpState", "MsiRoute", "MsrAccessError", "MsrExit", "PitState", "Registers",
    "Route", "Segment", "SpecialRegisters", "SyncReg", "SystemEventExit", "SystemEventType",
    "TprAccessExit", "UnknownExit", "Vcpu", "VcpuEventValid", "VcpuEvents", "Vm", "X86Quirk", "Xcrs", "Xsave",
    "dirty_bitmap_bytes", "ffi", "install_kick_handler", "lib", "to_python",
]
