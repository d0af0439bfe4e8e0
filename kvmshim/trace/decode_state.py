"""Decoders of the vCPU and VM state structs QEMU saves and restores (registers beyond
kvm_regs, FPU/XSAVE, LAPIC, events, irqchip, PIT, clock, MP state...), in short form.

Each takes a read-only cffi view of the struct (layouts from the compiled binding) and
returns plain values; ``Hex`` marks numbers shown in hex. Offsets into the XSAVE image
and the LAPIC page are the Intel SDM's (architectural), not KVM's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvm import ClockFlag, IrqchipId, MpState, VcpuEventValid, ffi, to_python
from kvm.constants import enum_name, flag_names

from .values import Hex, fields, hexed

CData = Any
_XSAVE_HEADER, _MXCSR = 512, 24
#: Local APIC registers shown (SDM vol. 3 table 11-1).
_LAPIC = {"id": 0x20, "version": 0x30, "tpr": 0x80, "ldr": 0xD0, "spurious": 0xF0, "lvt_timer": 0x320,
          "lvt_lint0": 0x350, "lvt_lint1": 0x360, "timer_initial": 0x380}


def _u(buf: bytes, offset: int, size: int) -> Hex:
    return Hex(int.from_bytes(buf[offset:offset + size], "little"))


def _segment(s: CData) -> dict[str, Any]:
    return fields(s, "selector", "base", hex_=("selector", "base"))


def sregs(s: CData) -> dict[str, Any]:
    """kvm_sregs short form: CS, DS, SS (selector and base) and the control registers."""
    return {"cs": _segment(s.cs), "ds": _segment(s.ds), "ss": _segment(s.ss),
            **fields(s, "cr0", "cr3", "cr4", "efer", hex_=("cr0", "cr3", "cr4", "efer"))}


def _sregs2(s: CData) -> dict[str, Any]:
    """kvm_sregs2: the kvm_sregs short form and its flags (PDPTRS_VALID)."""
    return {**sregs(s), "flags": Hex(s.flags)}


def _vcpu_events(e: CData) -> dict[str, Any]:
    out: dict[str, Any] = to_python(e[0])
    out["flags"] = flag_names(VcpuEventValid, e.flags)
    return out


def _fpu(f: CData) -> dict[str, Any]:
    return fields(f, "fcw", "fsw", "ftwx", "mxcsr", hex_=("fcw", "fsw", "ftwx", "mxcsr"))


def _xsave(x: CData) -> dict[str, Any]:
    buf = bytes(ffi.buffer(x))
    return {"xstate_bv": _u(buf, _XSAVE_HEADER, 8), "xcomp_bv": _u(buf, _XSAVE_HEADER + 8, 8),
            "fcw": _u(buf, 0, 2), "mxcsr": _u(buf, _MXCSR, 4)}


def _xcrs(x: CData) -> dict[str, Any]:
    return {"nr_xcrs": x.nr_xcrs, "flags": x.flags,
            "xcrs": {Hex(c.xcr): Hex(c.value) for c in x.xcrs[0:min(x.nr_xcrs, len(x.xcrs))]}}


def _lapic(a: CData) -> dict[str, Any]:
    regs = bytes(ffi.buffer(a.regs))
    return {name: _u(regs, offset, 4) for name, offset in _LAPIC.items()}


def _irqchip(c: CData) -> dict[str, Any]:
    out: dict[str, Any] = {"chip_id": enum_name(IrqchipId, c.chip_id)}
    if c.chip_id in (IrqchipId.PIC_MASTER, IrqchipId.PIC_SLAVE):
        pic = ("irr", "imr", "isr", "irq_base", "elcr")
        out.update(fields(c.chip.pic, *pic, hex_=pic))
    elif c.chip_id == IrqchipId.IOAPIC:
        io = c.chip.ioapic
        out.update(fields(io, "base_address", "id", "irr", hex_=("base_address", "irr")))
        out["unmasked_pins"] = [pin for pin, entry in enumerate(io.redirtbl) if not entry.bits >> 16 & 1]
    return out


def _pit(p: CData) -> dict[str, Any]:
    return {"channels": [fields(ch, "count", "mode", "gate") for ch in p.channels], "flags": Hex(p.flags)}


def _clock(c: CData) -> dict[str, Any]:
    return {**fields(c, "clock", "realtime", "host_tsc"), "flags": flag_names(ClockFlag, c.flags)}


def _msr_filter(f: CData) -> dict[str, Any]:
    return {"flags": Hex(f.flags), "ranges": [
        {**fields(r, "flags", "nmsrs", "base", hex_=("base",)), "bitmap": Hex(int(ffi.cast("uintptr_t", r.bitmap)))}
        for r in f.ranges if r.nmsrs]}


#: request name -> (argument struct, decoder), merged into decode.STRUCT_DECODERS.
STATE_DECODERS: dict[str, tuple[str, Callable[[CData], Any]]] = {
    **{f"KVM_{op}_SREGS": ("struct kvm_sregs", sregs) for op in ("GET", "SET")},
    **{f"KVM_{op}_SREGS2": ("struct kvm_sregs2", _sregs2) for op in ("GET", "SET")},
    **{f"KVM_{op}_VCPU_EVENTS": ("struct kvm_vcpu_events", _vcpu_events) for op in ("GET", "SET")},
    **{f"KVM_{op}_FPU": ("struct kvm_fpu", _fpu) for op in ("GET", "SET")},
    **dict.fromkeys(("KVM_GET_XSAVE", "KVM_SET_XSAVE", "KVM_GET_XSAVE2"), ("struct kvm_xsave", _xsave)),
    **{f"KVM_{op}_XCRS": ("struct kvm_xcrs", _xcrs) for op in ("GET", "SET")},
    **{f"KVM_{op}_LAPIC": ("struct kvm_lapic_state", _lapic) for op in ("GET", "SET")},
    **{f"KVM_{op}_DEBUGREGS": ("struct kvm_debugregs", lambda d: hexed(to_python(d[0]))) for op in ("GET", "SET")},
    **{f"KVM_{op}_MP_STATE": ("struct kvm_mp_state", lambda m: {"mp_state": enum_name(MpState, m.mp_state)})
       for op in ("GET", "SET")},
    **{f"KVM_{op}_IRQCHIP": ("struct kvm_irqchip", _irqchip) for op in ("GET", "SET")},
    **{f"KVM_{op}_PIT2": ("struct kvm_pit_state2", _pit) for op in ("GET", "SET")},
    **{f"KVM_{op}_CLOCK": ("struct kvm_clock_data", _clock) for op in ("GET", "SET")},
    **{f"KVM_{op}_DEVICE_ATTR": ("struct kvm_device_attr",
                                 lambda a: fields(a, "flags", "group", "attr", "addr", hex_=("attr", "addr")))
       for op in ("GET", "SET", "HAS")},
    "KVM_TPR_ACCESS_REPORTING": ("struct kvm_tpr_access_ctl", lambda t: fields(t, "enabled", "flags")),
    "KVM_SET_VAPIC_ADDR": ("struct kvm_vapic_addr", lambda v: {"vapic_addr": Hex(v.vapic_addr)}),
    "KVM_X86_SET_MSR_FILTER": ("struct kvm_msr_filter", _msr_filter),
    "KVM_X86_SETUP_MCE": ("__u64", lambda v: {"mcg_cap": Hex(v[0])}),
    "KVM_X86_GET_MCE_CAP_SUPPORTED": ("__u64", lambda v: {"mcg_cap": Hex(v[0])}),
    "KVM_IRQFD": ("struct kvm_irqfd", lambda i: fields(i, "fd", "gsi", "flags", "resamplefd")),
    "KVM_SIGNAL_MSI": ("struct kvm_msi", lambda m: fields(m, "address_lo", "address_hi", "data", "flags", "devid",
                                                       hex_=("address_lo", "address_hi", "data"))),
}
