"""vCPU and VM state at the stop: KVM's state ioctls, in QEMU's order (kvm_arch_put_registers).

Before a vCPU's state is read its last exit must be complete: KVM finishes an I/O exit (the IN's
data into EAX, RIP past the instruction) only at the next KVM_RUN, and keeps that pending work in
no state userspace can read (Documentation/virt/kvm/api.rst, KVM_RUN). A vCPU held by paused()
does that itself: the kick sets immediate_exit, the next KVM_RUN completes the exit and returns
EINTR at once, and the run loop clears immediate_exit before it waits, which is how ``settle``
knows it is done. A vCPU with no thread is entered here once, with immediate_exit, to the same end.
"""
from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvm import (
    Cap,
    ClockData,
    DebugRegs,
    ExitReason,
    Fpu,
    Irqchip,
    IrqchipId,
    Kvm,
    KvmError,
    Lapic,
    MsrAccessError,
    PitState,
    Vcpu,
    VcpuEvents,
    Vm,
    Xcrs,
    Xsave,
    ffi,
)

from .errors import MigrationBlocked, StateError

if TYPE_CHECKING:
    from listeners.vcpu_runner import VcpuRunner

SETTLE_TIMEOUT = 5.0
#: KVM's paravirtual MSRs (asm/kvm_para.h) and the KVM_FEATURE_* bit of CPUID leaf 0x40000001 EAX
#: that offers each one to the guest (Documentation/virt/kvm/x86/msr.rst): as QEMU does
#: (kvm_put_msrs), one is saved only if the guest was offered it; else it cannot have changed.
PV_MSR_FEATURES = {0x11: 0, 0x12: 0, 0x4B564D00: 3, 0x4B564D01: 3, 0x4B564D02: 4, 0x4B564D03: 5, 0x4B564D04: 6,
                   0x4B564D05: 12, 0x4B564D06: 14, 0x4B564D07: 14, 0x4B564D08: 17}
PV_MSR_RANGE = range(0x4B564D00, 0x4B564E00)
KVM_CPUID_FEATURES = 0x40000001


@dataclass(frozen=True)
class StateCaps:
    """Which optional state this VM has: XSAVE (else FPU), XCRs (QEMU's has_xsave, has_xcrs), the
    in-kernel irqchip (LAPICs, PICs, IOAPIC) and PIT."""

    xsave: bool
    xcrs: bool
    irqchip: bool
    pit: bool

    @classmethod
    def of(cls, vm: Vm) -> StateCaps:
        return cls(bool(vm.check_extension(Cap.XSAVE)), bool(vm.check_extension(Cap.XCRS)),
                   _present(lambda: vm.get_irqchip(IrqchipId.PIC_MASTER)), _present(vm.get_pit2))


def _present(get: Callable[[], object]) -> bool:
    """KVM_GET_IRQCHIP and KVM_GET_PIT2 fail with ENXIO on a VM that has no such device."""
    try:
        get()
    except KvmError as err:
        if err.errno == errno.ENXIO:
            return False
        raise
    return True


def saved_msrs(kvm: Kvm, vcpu: Vcpu) -> list[int]:
    """The MSRs KVM lists as saved (KVM_GET_MSR_INDEX_LIST) that this vCPU lets us read, but the
    paravirtual ones its CPUID does not offer."""
    offered = next((e.eax for e in vcpu.get_cpuid2() if e.function == KVM_CPUID_FEATURES), 0)
    readable = []
    for index in kvm.msr_index_list():
        if (index in PV_MSR_FEATURES or index in PV_MSR_RANGE) and not offered >> PV_MSR_FEATURES.get(index, 32) & 1:
            continue
        try:
            vcpu.get_msrs([index])
        except MsrAccessError:
            continue
        readable.append(index)
    return readable


def settle(runners: Sequence[VcpuRunner], timeout: float = SETTLE_TIMEOUT) -> list[bool]:
    """Inside ``machine.paused()``: wait until every vCPU's last exit is complete; returns which
    vCPUs had a run loop (the destination starts those)."""
    running = [runner.running for runner in runners]
    deadline = time.monotonic() + timeout
    for index, runner in enumerate(runners):
        vcpu = runner.vcpu
        if not running[index]:
            complete_exit(vcpu, index)
            continue
        while runner.running and (vcpu.immediate_exit or vcpu.in_kvm_run):
            if time.monotonic() > deadline:
                raise MigrationBlocked(f"vCPU {index} did not stop within {timeout:g} s (a device callback "
                                       "that does not return?)")
            time.sleep(50e-6)
    return running


def complete_exit(vcpu: Vcpu, index: int) -> None:
    """KVM_RUN with immediate_exit: the pending exit completes and no guest instruction runs."""
    vcpu.immediate_exit = True
    reason = vcpu.run()
    if reason != ExitReason.INTR:
        raise MigrationBlocked(f"vCPU {index}: completing its last exit led to another exit "
                               f"({ExitReason(reason).name}), which only its run loop can serve")


# ---------------------------------------------------------------- a vCPU
def save_vcpu(vcpu: Vcpu, msrs: list[int], caps: StateCaps) -> dict[str, Any]:
    return {
        "regs": bytes(ffi.buffer(vcpu.get_regs())),
        "sregs": bytes(ffi.buffer(vcpu.get_sregs())),
        "xsave": bytes(vcpu.get_xsave()) if caps.xsave else None,
        "fpu": None if caps.xsave else bytes(vcpu.get_fpu()),
        "xcrs": bytes(vcpu.get_xcrs()) if caps.xcrs else None,
        "msrs": vcpu.get_msrs(msrs),
        "mp_state": int(vcpu.get_mp_state()),
        "lapic": bytes(vcpu.get_lapic()) if caps.irqchip else None,
        "events": bytes(vcpu.get_vcpu_events()),
        "debugregs": bytes(vcpu.get_debugregs()),
    }


def load_vcpu(vcpu: Vcpu, state: dict[str, Any], caps: StateCaps, where: str) -> None:
    """Put a saved vCPU state back: regs, XSAVE (or FPU), XCRs, sregs, MSRs, MP state, LAPIC, events,
    debug registers. Only MSRs whose value differs are written, so one KVM keeps refusing at its
    reset value (MSR_KVM_ASYNC_PF_INT here) does not stop a migration."""
    try:
        vcpu.set_regs(_struct("struct kvm_regs *", state["regs"]))
        if state["xsave"] is not None:
            vcpu.set_xsave(Xsave.from_bytes(state["xsave"]))
        else:
            vcpu.set_fpu(Fpu.from_bytes(state["fpu"]))
        if state["xcrs"] is not None:
            vcpu.set_xcrs(Xcrs.from_bytes(state["xcrs"]))
        vcpu.set_sregs(_struct("struct kvm_sregs *", state["sregs"]))
        _load_msrs(vcpu, state["msrs"])
        vcpu.set_mp_state(state["mp_state"])
        if caps.irqchip:
            vcpu.set_lapic(Lapic.from_bytes(state["lapic"]))
        vcpu.set_vcpu_events(VcpuEvents.from_bytes(state["events"]))
        vcpu.set_debugregs(DebugRegs.from_bytes(state["debugregs"]))
    except (KeyError, TypeError, ValueError, KvmError) as err:
        raise StateError(f"{where}: {type(err).__name__}: {err}") from err


def _load_msrs(vcpu: Vcpu, saved: dict[int, int]) -> None:
    if not isinstance(saved, dict):
        raise TypeError(f"MSRs are {type(saved).__name__}, not a dict")
    current = vcpu.get_msrs(list(saved))
    changed = {index: value for index, value in saved.items() if current[index] != value}
    try:
        if changed:
            vcpu.set_msrs(changed)
    except MsrAccessError as err:
        raise ValueError(f"KVM refused MSR {err.index:#x} = {changed[err.index]:#x} (it holds "
                         f"{current[err.index]:#x} here)") from err


def _struct(ctype: str, data: bytes) -> Any:
    """A new cffi ``ctype`` (a pointer to a kvm struct) holding ``data``, which must fill it."""
    value = ffi.new(ctype)
    size = ffi.sizeof(value[0])
    if not isinstance(data, bytes) or len(data) != size:
        raise ValueError(f"{ctype[:-2]} is {size} bytes, got {len(data) if isinstance(data, bytes) else data!r}")
    ffi.buffer(value)[:] = data
    return value


# ---------------------------------------------------------------- the VM
CHIPS = (IrqchipId.PIC_MASTER, IrqchipId.PIC_SLAVE, IrqchipId.IOAPIC)


def save_vm(vm: Vm, caps: StateCaps) -> dict[str, Any]:
    """kvmclock, and the in-kernel PICs, IOAPIC and PIT where the machine has them."""
    return {"clock": bytes(vm.get_clock()),
            "irqchip": [bytes(vm.get_irqchip(chip)) for chip in CHIPS] if caps.irqchip else None,
            "pit": bytes(vm.get_pit2()) if caps.pit else None}


def load_vm(vm: Vm, state: dict[str, Any], where: str) -> None:
    try:
        if state["irqchip"] is not None:
            for chip, data in zip(CHIPS, state["irqchip"], strict=True):
                saved = Irqchip.from_bytes(data)
                if saved.chip_id != chip:
                    raise ValueError(f"irqchip {saved.chip_id.name} where {chip.name} belongs")
                vm.set_irqchip(saved)
        if state["pit"] is not None:
            vm.set_pit2(PitState.from_bytes(state["pit"]))
        vm.set_clock(ClockData.from_bytes(state["clock"]))
    except (KeyError, TypeError, ValueError, KvmError) as err:
        raise StateError(f"{where}: {type(err).__name__}: {err}") from err
