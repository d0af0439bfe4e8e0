"""Load plans: what a loader writes where, and the CPU state the guest starts in. Pure data.

A plan knows nothing of KVM or of a machine; ``kvmshim.loader`` applies one. ``check()`` tells
before any write whether a plan fits a machine's memory map, so a guest too big for its RAM
fails with one clear message instead of a late KVM error.
"""
from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .errors import GuestLoadError

KiB = 1 << 10
MiB = 1 << 20
E820_RAM = 1


class MemoryRange(NamedTuple):
    """One entry of a machine's memory map (e820 style); only ``E820_RAM`` entries hold guests."""

    start: int
    size: int
    type: int = E820_RAM


class Format(str, enum.Enum):
    """The load conventions (see docs/guests.md)."""

    FLAT = "flat"
    BOOT_SECTOR = "boot sector"
    DOS_COM = "DOS .COM"
    BIOS = "bios"
    ELF32 = "ELF32"
    ELF64 = "ELF64"
    MULTIBOOT = "multiboot"


class Mode(str, enum.Enum):
    """The CPU mode a guest is entered in."""

    REAL = "real"  # 16-bit real mode: cs/ds/ss are segments
    RESET = "reset"  # the x86 reset state (CS f000 based at ffff0000, IP fff0)
    PROTECTED = "protected"  # flat 32-bit protected mode, no paging: cs/ds/ss are GDT selectors
    LONG = "long"  # 64-bit long mode with identity-mapped page tables at ``cr3``


@dataclass(frozen=True)
class Entry:
    """The CPU state at the first instruction. General registers not in ``regs`` start at 0."""

    mode: Mode
    ip: int  # real mode: the offset in CS; otherwise the linear EIP/RIP
    cs: int = 0
    ds: int = 0  # also ES, FS and GS
    ss: int = 0
    sp: int | None = None  # None: no stack is set up (SP = 0)
    regs: Mapping[str, int] = field(default_factory=dict)  # kvm_regs names, e.g. {"rdx": 0x80}
    gdt: tuple[int, int] | None = None  # (base, limit) of the GDT the selectors index
    cr3: int | None = None  # long mode: the PML4's guest-physical address

    @property
    def linear_ip(self) -> int:
        return (self.cs << 4) + self.ip if self.mode is Mode.REAL else self.ip

    @property
    def linear_sp(self) -> int | None:
        if self.sp is None:
            return None
        return (self.ss << 4) + self.sp if self.mode is Mode.REAL else self.sp

    def describe(self) -> str:
        if self.mode is Mode.REAL:
            return f"{self.cs:04x}:{self.ip:04x}"
        if self.mode is Mode.RESET:
            return f"{self.cs:04x}:{self.ip:04x} (the reset state)"
        return f"{self.ip:#x} ({self.mode.value} mode)"


@dataclass(frozen=True)
class Segment:
    """Bytes to write into RAM at a guest-physical address, then ``zeros`` cleared bytes (an ELF's
    bss, a stack); ``what`` names the segment in messages."""

    gpa: int
    data: bytes
    what: str
    zeros: int = 0

    @property
    def end(self) -> int:
        return self.gpa + len(self.data) + self.zeros

    def describe(self) -> str:
        return f"{self.what} at {self.gpa:#x}-{self.end - 1:#x}"


@dataclass(frozen=True)
class Rom:
    """A firmware image mapped as ROM at ``gpa``, with a readonly alias of its last 64 KiB at ``alias_gpa``
    (QEMU's pc.bios and isa-bios)."""

    name: str
    gpa: int
    data: bytes
    alias_gpa: int | None = None


@dataclass(frozen=True)
class LoadPlan:
    """Everything a loader does to start a guest: write ``segments``, map ``rom``, enter at ``entry``."""

    name: str
    format: Format
    segments: tuple[Segment, ...]
    entry: Entry
    source: Path | None = None
    rom: Rom | None = None

    def __post_init__(self) -> None:
        pieces = sorted(self.segments, key=lambda s: s.gpa)
        for a, b in itertools.pairwise(pieces):
            if a.end > b.gpa:
                raise GuestLoadError(f"{self.name}: {a.describe()} overlaps {b.describe()}")
        sp = self.entry.linear_sp
        for s in pieces:
            if sp is not None and s.gpa < sp < s.end:
                raise GuestLoadError(f"{self.name}: {s.describe()} runs into its stack at {sp:#x}")

    def describe(self) -> str:
        """A few lines for people: the format, the entry and every piece with its addresses."""
        lines = [f"{self.name}: {self.format.value}, entry {self.entry.describe()}"]
        lines += [f"  {s.describe()}" for s in self.segments]
        if self.rom is not None:
            lines.append(f"  ROM {self.rom.name} at {self.rom.gpa:#x}-{self.rom.gpa + len(self.rom.data) - 1:#x}")
        return "\n".join(lines)

    def footprint(self) -> list[tuple[str, int, int]]:
        """(what, start, end) of every range that must be RAM: the segments and the top of the stack."""
        ranges = [(s.describe(), s.gpa, s.end) for s in self.segments if s.end > s.gpa]
        sp = self.entry.linear_sp
        if sp is not None and not any(start < sp <= end for _, start, end in ranges):
            ranges.append((f"stack at {sp:#x}", max(sp - 2, 0), sp))
        return ranges

    def check(self, memory_map: Sequence[MemoryRange]) -> None:
        """Raise GuestLoadError unless every piece of the plan lands in RAM of ``memory_map``."""
        ram = merged_ram(memory_map)
        footprint = self.footprint()
        top = max((r.start + r.size for r in ram), default=0)
        for what, start, end in footprint:
            if any(r.start <= start and end <= r.start + r.size for r in ram):
                continue
            if end > top:
                need = max(end for _, _, end in footprint)
                parts = ", ".join(w for w, _, _ in footprint)
                raise GuestLoadError(f"{self.name}: {self.format.value} guests need at least {_size(need)} "
                                     f"of RAM here ({parts}); this machine has {_describe(ram)}")
            raise GuestLoadError(f"{self.name}: {what} is not RAM on this machine (RAM: {_describe(ram)})")


def merged_ram(memory_map: Iterable[MemoryRange]) -> list[MemoryRange]:
    """The RAM entries of a memory map, sorted, with adjacent or overlapping ones joined and empty
    ones dropped: the form ``check()`` and ``kvmshim.loader.memory_map`` compare plans against."""
    out: list[MemoryRange] = []
    for r in sorted(r for r in (MemoryRange(*r) for r in memory_map) if r.type == E820_RAM):
        if out and out[-1].start + out[-1].size >= r.start:
            last = out[-1]
            out[-1] = MemoryRange(last.start, max(last.size, r.start + r.size - last.start))
        elif r.size:
            out.append(r)
    return out


def ram_below(memory_map: Sequence[MemoryRange], start: int) -> int:
    """Bytes of RAM contiguous from ``start`` (0 if ``start`` is not RAM)."""
    for r in merged_ram(memory_map):
        if r.start <= start < r.start + r.size:
            return r.start + r.size - start
    return 0


def _size(n: int) -> str:
    """Bytes in KiB or, from 1 MiB on, in MiB; rounded up (the least RAM that holds them)."""
    return f"{-(-n // MiB)} MiB" if n > MiB else f"{-(-n // KiB)} KiB"


def _describe(ram: Sequence[MemoryRange]) -> str:
    if not ram:
        return "no RAM"
    if len(ram) == 1 and ram[0].start == 0:
        return f"{_size(ram[0].size)} (0x0-{ram[0].size - 1:#x})"
    return ", ".join(f"{r.start:#x}-{r.start + r.size - 1:#x}" for r in ram)
