"""Multiboot v1 kernels (the Multiboot Specification 0.6.96), loaded the way QEMU's ``-kernel`` does.

The header sits 4-byte aligned in the first 8 KiB. With flag 16 its address fields say where
the file goes (the "a.out kludge"); otherwise the kernel must be an ELF32 file, loaded by its
program headers. Modules (``-initrd``) follow the kernel page-aligned, then the information
block with its command lines, module list and memory map. The kernel starts in flat 32-bit
protected mode with EAX=0x2BADB002 and EBX pointing at the information block.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from . import cpu, elf
from .errors import GuestFormatError
from .plans import Format, LoadPlan, MemoryRange, Mode, Segment, ram_below

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH = 8192
PAGE_ALIGN_MODULES, MEMORY_INFO, VIDEO_MODE, ADDRESS_FIELDS = 1 << 0, 1 << 1, 1 << 2, 1 << 16
_KNOWN_REQUIREMENTS = PAGE_ALIGN_MODULES | MEMORY_INFO | VIDEO_MODE
# multiboot_info flags
INFO_MEMORY, INFO_BOOT_DEVICE, INFO_CMDLINE, INFO_MODS, INFO_MMAP, INFO_LOADER_NAME = 1, 2, 4, 8, 0x40, 0x200
INFO_SIZE, MODULE_SIZE, MMAP_ENTRY_SIZE = 88, 16, 24
BOOT_DEVICE = 0x8000FFFF  # first BIOS hard disk, no partition (what QEMU passes)
LOADER_NAME = b"kvmshim\0"


class Header(NamedTuple):
    offset: int  # of the magic in the file
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


class Module(NamedTuple):
    """A boot module: its bytes and its command line (QEMU: one ``-initrd`` entry, "file args")."""

    data: bytes
    cmdline: str = ""


def find_header(kernel: bytes) -> Header | None:
    """The first valid multiboot header (magic + flags + checksum == 0 mod 2**32) in the first 8 KiB."""
    for offset in range(0, min(len(kernel), SEARCH) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", kernel, offset)
        if magic == HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            if flags & ADDRESS_FIELDS and offset + 32 <= len(kernel):
                return Header(offset, flags, *struct.unpack_from("<5I", kernel, offset + 12))
            return Header(offset, flags)
    return None


def plan(kernel: bytes, *, cmdline: str = "", modules: Sequence[Module] = (),
         memory_map: Sequence[MemoryRange], name: str = "kernel", source: Path | None = None) -> LoadPlan:
    """The load plan of a multiboot kernel on a machine with ``memory_map`` (its RAM layout).
    ``cmdline`` is passed verbatim (QEMU passes "KERNEL-FILE APPEND")."""
    header = find_header(kernel)
    if header is None:
        raise GuestFormatError(f"{name}: no multiboot header (magic {HEADER_MAGIC:#x} with a valid checksum) "
                               f"in the first {SEARCH} bytes")
    unknown = header.flags & 0xFFFF & ~_KNOWN_REQUIREMENTS
    if unknown:
        raise GuestFormatError(f"{name}: the multiboot header requires features {unknown:#x} this loader "
                               "does not know (it knows page-aligned modules, memory info and a video mode)")
    segments, entry_point = (_address_fields(kernel, header, name) if header.flags & ADDRESS_FIELDS
                             else _elf(kernel, name))
    placed = []  # (start, end, cmdline) of each module
    end = max(s.end for s in segments)
    for index, module in enumerate(modules):
        start = cpu.page_up(end)
        segments.append(Segment(start, bytes(module.data), f"module {index}"))
        end = start + len(module.data)
        placed.append((start, end, module.cmdline))
    info_addr = cpu.page_up(end)
    segments.append(Segment(info_addr, _info(info_addr, cmdline, placed, memory_map), "multiboot info"))
    system, entry = cpu.enter(Mode.PROTECTED, entry_point, segments, name,
                              regs={"rax": BOOTLOADER_MAGIC, "rbx": info_addr})
    return LoadPlan(name, Format.MULTIBOOT, tuple(segments + system), entry, source)


def _address_fields(kernel: bytes, h: Header, name: str) -> tuple[list[Segment], int]:
    """The a.out kludge: file offset ``header offset - (header_addr - load_addr)`` goes to load_addr."""
    offset = h.offset - (h.header_addr - h.load_addr)
    load_end = h.load_end_addr or h.load_addr + len(kernel) - offset
    if h.header_addr < h.load_addr or offset < 0 or not h.load_addr <= load_end <= h.load_addr + len(kernel) - offset:
        raise GuestFormatError(f"{name}: multiboot address fields do not fit the file (header_addr "
                               f"{h.header_addr:#x}, load_addr {h.load_addr:#x}, load_end_addr {h.load_end_addr:#x}, "
                               f"file of {len(kernel):#x} bytes)")
    if h.bss_end_addr and h.bss_end_addr < load_end:
        raise GuestFormatError(f"{name}: multiboot bss_end_addr {h.bss_end_addr:#x} is below load_end_addr "
                               f"{load_end:#x}")
    data = kernel[offset:offset + load_end - h.load_addr]
    bss = h.bss_end_addr - load_end if h.bss_end_addr else 0
    return [Segment(h.load_addr, data, "kernel", zeros=bss)], h.entry_addr


def _elf(kernel: bytes, name: str) -> tuple[list[Segment], int]:
    if not elf.is_elf(kernel):
        raise GuestFormatError(f"{name}: a multiboot kernel without address fields (flag 16) must be an ELF file")
    image = elf.parse(kernel, name)
    if image.bits != 32:
        raise GuestFormatError(f"{name}: a multiboot kernel must be ELF32 (QEMU: Cannot load x86-64 image, "
                               "give a 32bit one)")
    segments = [Segment(s.paddr, s.data, f"kernel segment {i}", zeros=s.memsz - len(s.data))
                for i, s in enumerate(image.segments)]
    return segments, image.physical_entry()


def _info(base: int, cmdline: str, modules: Sequence[tuple[int, int, str]],
          memory_map: Sequence[MemoryRange]) -> bytes:
    """The multiboot_info block at ``base``, followed by the module list, memory map and strings."""
    mods_addr = base + INFO_SIZE
    mmap = [MemoryRange(*r) for r in memory_map]
    mmap_addr = mods_addr + MODULE_SIZE * len(modules)
    strings = bytearray()
    strings_addr = mmap_addr + MMAP_ENTRY_SIZE * len(mmap)

    def string(text: bytes) -> int:
        strings.extend(text)
        return strings_addr + len(strings) - len(text)

    cmdline_addr = string(cmdline.encode() + b"\0")
    module_list = b"".join(struct.pack("<4I", start, end, string(text.encode() + b"\0"), 0)
                           for start, end, text in modules)
    loader_name = string(LOADER_NAME)
    entries = b"".join(struct.pack("<IQQI", MMAP_ENTRY_SIZE - 4, r.start, r.size, r.type) for r in mmap)
    flags = INFO_MEMORY | INFO_BOOT_DEVICE | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME
    lower = min(ram_below(memory_map, 0), 640 << 10) >> 10
    upper = ram_below(memory_map, 1 << 20) >> 10
    info = struct.pack("<12I", flags, lower, upper, BOOT_DEVICE, cmdline_addr, len(modules),
                       mods_addr if modules else 0, 0, 0, 0, 0, len(entries)) + struct.pack("<I", mmap_addr)
    info += struct.pack("<4I", 0, 0, 0, loader_name)  # drives, config table, boot loader name
    return info.ljust(INFO_SIZE, b"\0") + module_list + entries + bytes(strings)
