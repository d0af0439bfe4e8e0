"""General, segment and special registers as plain-int dataclasses (``Vcpu.registers()``).

Field names are those of ``struct kvm_regs``/``kvm_segment``/``kvm_sregs``; the import-time
check below keeps them in step with the compiled header.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ._cdata import CData
from ._kvm_cffi import ffi


@dataclass
class Registers:
    """``struct kvm_regs``."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2


@dataclass
class Segment:
    """``struct kvm_segment``: a segment register with its hidden part."""

    base: int = 0
    limit: int = 0xFFFF
    selector: int = 0
    type: int = 0
    present: int = 0
    dpl: int = 0
    db: int = 0
    s: int = 0
    l: int = 0  # noqa: E741 (the header's name)
    g: int = 0
    avl: int = 0
    unusable: int = 0


@dataclass
class DescriptorTable:
    """``struct kvm_dtable``: GDTR or IDTR."""

    base: int = 0
    limit: int = 0


@dataclass
class SpecialRegisters:
    """``struct kvm_sregs``: segments, descriptor tables, control registers, EFER, APIC base."""

    cs: Segment
    ds: Segment
    es: Segment
    fs: Segment
    gs: Segment
    ss: Segment
    tr: Segment
    ldt: Segment
    gdt: DescriptorTable
    idt: DescriptorTable
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    cr8: int
    efer: int
    apic_base: int
    interrupt_bitmap: tuple[int, ...]


SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
TABLES = ("gdt", "idt")

for _cls, _ctype in ((Registers, "struct kvm_regs"), (Segment, "struct kvm_segment"),
                     (DescriptorTable, "struct kvm_dtable"), (SpecialRegisters, "struct kvm_sregs")):
    assert [f.name for f in fields(_cls)] == [n for n, _ in ffi.typeof(_ctype).fields], _ctype


def registers_of(regs: CData) -> Registers:
    return Registers(**{f.name: int(getattr(regs, f.name)) for f in fields(Registers)})


def special_registers_of(sregs: CData) -> SpecialRegisters:
    def segment(s: CData) -> Segment:
        return Segment(**{f.name: int(getattr(s, f.name)) for f in fields(Segment)})

    segments: dict[str, Any] = {n: segment(getattr(sregs, n)) for n in SEGMENTS}
    tables: dict[str, Any] = {n: DescriptorTable(int(getattr(sregs, n).base), int(getattr(sregs, n).limit))
                              for n in TABLES}
    return SpecialRegisters(
        **segments, **tables, cr0=sregs.cr0, cr2=sregs.cr2, cr3=sregs.cr3, cr4=sregs.cr4, cr8=sregs.cr8,
        efer=sregs.efer, apic_base=sregs.apic_base, interrupt_bitmap=tuple(sregs.interrupt_bitmap))


def updated(kind: type, current: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
    """*current*'s fields with *changes* applied; an unknown name raises TypeError naming it.
    A segment or table may be given as its dataclass or as a mapping of the fields to change."""
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"{kind.__name__}: no register {', '.join(unknown)} "
                        f"(fields: {', '.join(f.name for f in fields(kind))})")
    values = asdict(current)
    for name, value in changes.items():
        if isinstance(value, Mapping):
            part = type(getattr(current, name))
            value = part(**updated(part, getattr(current, name), value))
        values[name] = asdict(value) if isinstance(value, (Segment, DescriptorTable)) else value
    return values
