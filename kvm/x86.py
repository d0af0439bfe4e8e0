"""x86 architectural state for real-mode guests, written into kvm_sregs/kvm_regs structs."""
from __future__ import annotations

from ._cdata import CData

CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR0_RESET = 0x60000010  # CD | NW | ET: CR0 after RESET/INIT
RFLAGS_RESET = 0x2  # bit 1 is reserved, always set
RESET_CS_SELECTOR = 0xF000
RESET_CS_BASE = 0xFFFF0000
RESET_IP = 0xFFF0
_CODE = 0xB  # execute/read, accessed
_DATA = 0x3  # read/write, accessed


def _segment(seg: CData, selector: int, base: int, seg_type: int) -> None:
    seg.selector, seg.base, seg.limit, seg.type = selector, base, 0xFFFF, seg_type
    seg.present, seg.s = 1, 1
    seg.dpl = seg.db = seg.l = seg.g = seg.avl = seg.unusable = 0


def load_real_mode(sregs: CData, cs: int, cs_base: int, ds: int, ss: int) -> None:
    """Real-mode CS (selector, base), DS=ES=FS=GS=*ds*, SS=*ss*; clears CR0.PE and with it what
    protected mode allowed (paging, PAE, EFER), which KVM_SET_SREGS would refuse without PE."""
    _segment(sregs.cs, cs, cs_base, _CODE)
    for name, selector in (("ds", ds), ("es", ds), ("fs", ds), ("gs", ds), ("ss", ss)):
        _segment(getattr(sregs, name), selector, selector << 4, _DATA)
    sregs.cr0 &= ~(CR0_PE | CR0_PG)
    sregs.cr4 &= ~CR4_PAE
    sregs.efer = 0


def load_reset_state(sregs: CData) -> None:
    """The x86 RESET state: CS f000 based at ffff0000, data segments 0, CR0 60000010."""
    load_real_mode(sregs, RESET_CS_SELECTOR, RESET_CS_BASE, 0, 0)
    sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer = CR0_RESET, 0, 0, 0, 0
    for table in (sregs.gdt, sregs.idt):
        table.base, table.limit = 0, 0xFFFF
