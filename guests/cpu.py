"""The memory a 32-bit or 64-bit entry needs besides the image: a flat GDT, identity-mapped page
tables (long mode) and a stack, placed in low RAM where no image segment is.

Selectors: 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code (what QEMU's multiboot
option ROM and GRUB give a kernel, plus the long-mode code segment). Long mode maps the first
4 GiB 1:1 with 2 MiB pages, so devices below 4 GiB are reachable too.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from .errors import GuestLoadError
from .plans import Entry, Mode, Segment

PAGE = 0x1000
CODE32, DATA, CODE64 = 0x08, 0x10, 0x18
_GDT = (0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x00AF9B000000FFFF)
_PRESENT_WRITABLE, _LARGE = 0x3, 0x80
_MAPPED_GIB = 4
_PAGE_TABLES_SIZE = (2 + _MAPPED_GIB) * PAGE  # what identity_page_tables returns: PML4, PDPT, directories
STACK_SIZE = 0x4000
LOW_START, LOW_END = 0x1000, 0x9F000  # above the real-mode IVT/BDA, below the EBDA


def gdt() -> bytes:
    return struct.pack(f"<{len(_GDT)}Q", *_GDT)


def identity_page_tables(base: int) -> bytes:
    """PML4 at ``base``, one PDPT after it, then one page directory per GiB (2 MiB pages)."""
    pdpt, directories = base + PAGE, base + 2 * PAGE
    pml4 = struct.pack("<Q", pdpt | _PRESENT_WRITABLE).ljust(PAGE, b"\0")
    pdpt_page = struct.pack(f"<{_MAPPED_GIB}Q", *((directories + i * PAGE) | _PRESENT_WRITABLE
                                                  for i in range(_MAPPED_GIB))).ljust(PAGE, b"\0")
    entries = (((i << 21) | _PRESENT_WRITABLE | _LARGE) for i in range(512 * _MAPPED_GIB))
    return pml4 + pdpt_page + struct.pack(f"<{512 * _MAPPED_GIB}Q", *entries)


def page_up(addr: int) -> int:
    """``addr`` rounded up to a page boundary."""
    return -(-addr // PAGE) * PAGE


def free_low_area(taken: Sequence[Segment], size: int, name: str) -> int:
    """The lowest page-aligned address in [LOW_START, LOW_END) where ``size`` bytes overlap no segment."""
    start = LOW_START
    for s in sorted((s for s in taken if s.end > LOW_START), key=lambda s: s.gpa):
        if start + size <= s.gpa:
            break
        start = max(start, page_up(s.end))
    if start + size > LOW_END:
        raise GuestLoadError(f"{name}: no {size:#x} free bytes below {LOW_END:#x} for the GDT, "
                             "page tables and stack (the image fills low memory)")
    return start


def enter(mode: Mode, ip: int, taken: Sequence[Segment], name: str,
          regs: Mapping[str, int] | None = None) -> tuple[list[Segment], Entry]:
    """The GDT (+ page tables in long mode) and stack segments for entering at ``ip`` in ``mode``,
    placed beside ``taken``, and the Entry that uses them."""
    tables = _PAGE_TABLES_SIZE if mode is Mode.LONG else 0
    base = free_low_area(taken, PAGE + tables + STACK_SIZE, name)
    segments = [Segment(base, gdt(), "GDT")]
    if tables:
        segments.append(Segment(base + PAGE, identity_page_tables(base + PAGE), "page tables"))
    stack = base + PAGE + tables
    segments.append(Segment(stack, b"", "stack", zeros=STACK_SIZE))
    entry = Entry(mode, ip, cs=CODE64 if mode is Mode.LONG else CODE32, ds=DATA, ss=DATA,
                  sp=stack + STACK_SIZE, regs=dict(regs or {}), gdt=(base, len(_GDT) * 8 - 1),
                  cr3=base + PAGE if tables else None)
    return segments, entry
