"""Put a vCPU into a load plan's entry state: real mode, the reset state, flat 32-bit protected
mode or long mode (the plan supplies the GDT and page tables in guest memory).

Segment registers are loaded with the hidden (cached) descriptor state a CPU would have after
loading those selectors from the plan's GDT, so the guest may reload them itself.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guests import Entry, Mode
from kvm import Vcpu, ffi, x86

CR0_ET = 1 << 4
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
_CODE, _DATA = 0xB, 0x3  # execute/read and read/write, both accessed
CData = Any  # a cffi struct (kvm_sregs, kvm_segment)


def enter(vcpu: Vcpu, entry: Entry, regs: Mapping[str, int] | None = None) -> None:
    """Load ``entry`` into ``vcpu``: segments and control registers, then RIP, RSP, RFLAGS and the
    general registers (0 unless ``entry.regs`` or ``regs``, which wins, sets them)."""
    sregs = vcpu.get_sregs()
    if entry.mode is Mode.RESET:
        x86.load_reset_state(sregs)
    elif entry.mode is Mode.REAL:
        x86.load_real_mode(sregs, entry.cs, entry.cs << 4, entry.ds, entry.ss)
    else:
        _flat(sregs, entry)
    vcpu.set_sregs(sregs)
    state = ffi.new("struct kvm_regs *")  # zeroed, and every field is set below: no KVM_GET_REGS
    for name, value in {**entry.regs, **(regs or {})}.items():
        setattr(state, name, value)
    state.rip, state.rsp, state.rflags = entry.ip, entry.sp or 0, x86.RFLAGS_RESET
    vcpu.set_regs(state)


def _flat(sregs: CData, entry: Entry) -> None:
    """Flat 4 GiB segments from the plan's GDT; long mode adds paging through ``entry.cr3``."""
    long = entry.mode is Mode.LONG
    _descriptor(sregs.cs, entry.cs, _CODE, long)
    for name in ("ds", "es", "fs", "gs"):
        _descriptor(getattr(sregs, name), entry.ds, _DATA, False)
    _descriptor(sregs.ss, entry.ss, _DATA, False)
    if entry.gdt is not None:
        sregs.gdt.base, sregs.gdt.limit = entry.gdt
    sregs.cr0 = x86.CR0_PE | CR0_ET | (x86.CR0_PG if long else 0)
    sregs.cr3 = entry.cr3 or 0
    sregs.cr4 = x86.CR4_PAE if long else 0
    sregs.efer = EFER_LME | EFER_LMA if long else 0


def _descriptor(seg: CData, selector: int, seg_type: int, long_code: bool) -> None:
    seg.selector, seg.base, seg.limit, seg.type = selector, 0, 0xFFFFFFFF, seg_type
    seg.present = seg.s = seg.g = 1
    seg.dpl = seg.avl = seg.unusable = 0
    seg.l, seg.db = (1, 0) if long_code else (0, 1)
