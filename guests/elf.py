"""ELF executables: the header and PT_LOAD program headers of ELF32 (i386) and ELF64 (x86-64) files.

Segments load at their physical address (``p_paddr``), as QEMU's load_elf does; the file part
is copied and the rest of ``p_memsz`` cleared.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import GuestFormatError

MAGIC = b"\x7fELF"
ET_EXEC = 2
PT_LOAD = 1
EM_386, EM_X86_64 = 3, 62
_MACHINES = {1: (32, EM_386, "i386"), 2: (64, EM_X86_64, "x86-64")}  # EI_CLASS -> (bits, e_machine, name)
# (header layout after e_ident, program header layout) per class.
_LAYOUT = {32: ("<HHIIIIIHHHHHH", "<IIIIIIII"), 64: ("<HHIQQQIHHHHHH", "<IIQQQQQQ")}


@dataclass(frozen=True)
class ElfSegment:
    paddr: int
    vaddr: int
    data: bytes  # the p_filesz bytes from the file
    memsz: int


@dataclass(frozen=True)
class ElfImage:
    bits: int  # 32 or 64
    entry: int  # e_entry, a virtual address
    segments: tuple[ElfSegment, ...]

    def physical_entry(self) -> int:
        """e_entry moved to where its segment loads (a kernel linked high but loaded low), else e_entry."""
        for s in self.segments:
            if s.vaddr <= self.entry < s.vaddr + s.memsz:
                return self.entry - s.vaddr + s.paddr
        return self.entry

    @property
    def low(self) -> int:
        return min(s.paddr for s in self.segments)

    @property
    def high(self) -> int:
        return max(s.paddr + s.memsz for s in self.segments)


def is_elf(data: bytes) -> bool:
    return data[:4] == MAGIC


def parse(data: bytes, name: str) -> ElfImage:
    """The loadable view of an x86 ELF executable; GuestFormatError names what is wrong with it."""
    def bad(why: str) -> GuestFormatError:
        return GuestFormatError(f"{name}: not a loadable ELF executable: {why}")

    if len(data) < 52 or not is_elf(data):
        raise bad("too short for an ELF header" if is_elf(data) else "no ELF magic")
    if data[4] not in _MACHINES:
        raise bad(f"class {data[4]} (ELFCLASS32 or ELFCLASS64 expected)")
    if data[5] != 1:
        raise bad(f"data encoding {data[5]} (little-endian expected)")
    bits, machine, arch = _MACHINES[data[4]]
    header, program_header = _LAYOUT[bits]
    if len(data) < 16 + struct.calcsize(header):
        raise bad("truncated ELF header")
    (e_type, e_machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = struct.unpack_from(header, data, 16)
    if e_type != ET_EXEC:
        raise bad(f"type {e_type} (ET_EXEC expected: link a static executable at a fixed address)")
    if e_machine != machine:
        raise bad(f"machine {e_machine} in an ELF{bits} file ({arch} expected)")
    if phnum == 0 or phentsize < struct.calcsize(program_header) or phoff + phnum * phentsize > len(data):
        raise bad(f"program headers at {phoff:#x} ({phnum} of {phentsize} bytes) are not in the file")
    segments = []
    for index in range(phnum):
        fields = struct.unpack_from(program_header, data, phoff + index * phentsize)
        if bits == 32:
            p_type, offset, vaddr, paddr, filesz, memsz = fields[:6]
        else:
            p_type, _, offset, vaddr, paddr, filesz, memsz = fields[:7]
        if p_type != PT_LOAD or memsz == 0:
            continue
        if filesz > memsz or offset + filesz > len(data):
            raise bad(f"segment {index}: {filesz:#x} file bytes at {offset:#x} (memsz {memsz:#x}) "
                      f"do not fit the file of {len(data):#x} bytes")
        segments.append(ElfSegment(paddr, vaddr, data[offset:offset + filesz], memsz))
    if not segments:
        raise bad("no PT_LOAD segment")
    return ElfImage(bits, entry, tuple(segments))
