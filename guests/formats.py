"""From a guest file to its load plan: the format is chosen by content first, then by extension.

* GNU as source (``.S``/``.s``): the header's kind (default flat), entered at ``_start``.
* NASM source (``.asm``/``.nasm``): ``nasm -f bin``, then by ``org``: 0x7c00 boot sector,
  0x100 DOS .COM, other values flat at that address, none (0) flat at 0x1000 entered at 0100:0000.
* Any image: a multiboot header in the first 8 KiB -> multiboot; ELF magic -> ELF32/ELF64;
  ``.com`` -> DOS .COM; 512 bytes ending 0x55 0xAA -> boot sector; otherwise flat at 0x1000.

Real-mode plans also write the real-mode services (services.S: IVT, BIOS data area and the
int 10h/20h/21h handlers), since the machine has no BIOS; ``services=False`` leaves them out.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import cpu, elf, multiboot, sources, toolchain
from .errors import GuestError, GuestFormatError
from .plans import Entry, Format, LoadPlan, MemoryRange, Mode, Rom, Segment, ram_below
from .sources import KINDS

EntryPoint = int | tuple[int, int]  # a linear address, or (segment, offset) in real mode
FLAT_LOAD, FLAT_STACK = KINDS["flat"].load_gpa, KINDS["flat"].stack
BOOT_SIGNATURE = b"\x55\xaa"
DOS_TOP = 0xA0000  # conventional memory ends at 640 KiB
DEFAULT_MEMORY_MAP = (MemoryRange(0, 16 << 20),)


def plan(guest: str | Path, *, load: int | None = None, entry: EntryPoint | None = None,
         cmdline: str = "", modules: Sequence[multiboot.Module] = (),
         memory_map: Sequence[MemoryRange] = DEFAULT_MEMORY_MAP, services: bool = True) -> LoadPlan:
    """The load plan of ``guest`` (a bundled name or a path), building sources first. ``load`` and
    ``entry`` override the format's load address and entry point (``--load``/``--entry``);
    ``cmdline`` and ``modules`` go to multiboot kernels (a .COM gets ``cmdline`` as its command tail);
    given to any other guest they are refused, before anything is loaded, rather than ignored."""
    result = _plan(sources.resolve(guest), load, entry, cmdline, modules, memory_map, services)
    if modules and result.format is not Format.MULTIBOOT:
        raise GuestFormatError(f"{result.name}: modules (--initrd) apply to multiboot kernels; this is a "
                               f"{result.format.value} guest")
    if cmdline and result.format not in (Format.MULTIBOOT, Format.DOS_COM):
        raise GuestFormatError(f"{result.name}: a command line (--append) applies to multiboot kernels and .COM "
                               f"programs; this is a {result.format.value} guest")
    return result


def _plan(source: Path, load: int | None, entry: EntryPoint | None, cmdline: str,
          modules: Sequence[multiboot.Module], memory_map: Sequence[MemoryRange], services: bool) -> LoadPlan:
    if source.suffix in (".S", ".s"):
        return _gas(source, load, entry, cmdline, memory_map, services)
    if source.suffix.lower() in (".asm", ".nasm"):
        built = toolchain.nasm(source)
        return image_plan(built.image.read_bytes(), source, org=toolchain.nasm_origin(built.map_file),
                          load=load, entry=entry, cmdline=cmdline, modules=modules, memory_map=memory_map,
                          services=services)
    try:
        data = source.read_bytes()
    except OSError as err:
        raise GuestError(f"cannot read guest {source}: {err.strerror}") from err
    return image_plan(data, source, load=load, entry=entry, cmdline=cmdline, modules=modules,
                      memory_map=memory_map, services=services)


def detect(data: bytes, suffix: str, org: int | None = None) -> Format:
    """The format of an image: content first, then ``org`` (NASM) or the file's suffix."""
    if multiboot.find_header(data) is not None:
        return Format.MULTIBOOT
    if elf.is_elf(data):
        return Format.ELF64 if data[4:5] == b"\x02" else Format.ELF32
    if org == 0x100 or (org is None and suffix.lower() == ".com"):
        return Format.DOS_COM
    if org == 0x7C00 or (not org and len(data) == 512 and data[510:] == BOOT_SIGNATURE):
        return Format.BOOT_SECTOR
    return Format.FLAT


def image_plan(data: bytes, source: Path, *, org: int | None = None, load: int | None = None,
               entry: EntryPoint | None = None, cmdline: str = "", modules: Sequence[multiboot.Module] = (),
               memory_map: Sequence[MemoryRange] = DEFAULT_MEMORY_MAP, services: bool = True) -> LoadPlan:
    """The plan of an image (``org``: the origin NASM assembled it for, None for a file)."""
    name = source.name
    fmt = detect(data, source.suffix, org)
    if fmt is Format.FLAT and org is None and source.suffix.lower() not in (".bin", ".img") and _is_text(data):
        raise GuestFormatError(f"{name}: cannot tell the format of a text file (GNU as sources are .S or .s, "
                               "NASM sources .asm or .nasm)")
    if load is not None and fmt is not Format.FLAT:
        raise GuestFormatError(f"{name}: a load address applies to flat images; a {fmt.value} loads where "
                               "its format says")
    if fmt is Format.MULTIBOOT:
        if entry is not None:
            raise GuestFormatError(f"{name}: a multiboot kernel is entered where its header says")
        return multiboot.plan(data, cmdline=f"{source} {cmdline}", modules=modules, memory_map=memory_map,
                              name=name, source=source)
    if fmt in (Format.ELF32, Format.ELF64):
        return elf_plan(elf.parse(data, name), source, entry)
    real = _services(services)
    if fmt is Format.DOS_COM:
        return com_plan(data, source, real, entry, cmdline, memory_map)
    if fmt is Format.BOOT_SECTOR:
        boot = KINDS["boot"]
        return _real(fmt, source, data, boot.load_gpa, (0, boot.ip), entry, real, ss_sp=(0, boot.stack),
                     regs={"rdx": 0x80})
    at = load if load is not None else org or FLAT_LOAD
    if org == 0:  # NASM code without org: its offsets count from its first byte, so CS points there
        if at & 0xF:
            raise GuestFormatError(f"{name}: code assembled without org loads at a 16-byte boundary, "
                                   f"not {at:#x}")
        return _real(fmt, source, data, at, (at >> 4, 0), entry, real)
    return _real(fmt, source, data, at, _segmented(at), entry, real)


def parse_entry(text: str) -> EntryPoint:
    """An entry point as people write it: ``SEG:OFF`` in hex (``07c0:0000``) or an address (``0x100000``)."""
    segment, colon, offset = text.partition(":")
    try:
        if colon:
            point = (int(segment, 16), int(offset, 16))
            if max(point) > 0xFFFF:
                raise ValueError
            return point
        return int(text, 0)
    except ValueError:
        raise ValueError(f"not an entry point: {text!r} (use SEG:OFF in hex, e.g. 07c0:0000, or an address "
                         "such as 0x100000)") from None


def elf_plan(image: elf.ElfImage, source: Path, entry: EntryPoint | None = None) -> LoadPlan:
    """ELF32 in flat 32-bit protected mode; ELF64 in long mode, where virtual equals physical."""
    name = source.name
    segments = [Segment(s.paddr, s.data, f"ELF segment {i}", zeros=s.memsz - len(s.data))
                for i, s in enumerate(image.segments)]
    if image.bits == 64:
        for i, s in enumerate(image.segments):
            if s.vaddr != s.paddr or s.paddr + s.memsz > 4 << 30:
                raise GuestFormatError(f"{name}: ELF segment {i} is linked at {s.vaddr:#x} to load at {s.paddr:#x}; "
                                       "ELF64 guests run on a 1:1 map of the first 4 GiB")
        mode, ip = Mode.LONG, image.entry
    else:
        mode, ip = Mode.PROTECTED, image.physical_entry()
    if isinstance(entry, tuple):
        raise GuestFormatError(f"{name}: a SEG:OFF entry applies to real-mode guests; give an address")
    system, start = cpu.enter(mode, ip if entry is None else entry, segments, name)
    fmt = Format.ELF64 if image.bits == 64 else Format.ELF32
    return LoadPlan(name, fmt, tuple(segments + system), start, source)


def com_plan(data: bytes, source: Path, services: Sequence[Segment], entry: EntryPoint | None = None,
             cmdline: str = "", memory_map: Sequence[MemoryRange] = DEFAULT_MEMORY_MAP) -> LoadPlan:
    """A DOS .COM: PSP at PSP_SEGMENT:0, the program at PSP:0100, CS=DS=ES=SS=PSP, SP=FFFE with a
    0 word on the stack, so a ``ret`` reaches the PSP's ``int 20h``."""
    k = KINDS["com"]
    if len(data) > k.max_size:
        raise GuestFormatError(f"{source.name}: a DOS .COM program holds at most {k.max_size:#x} bytes "
                               f"(PSP:0100 up to its stack at PSP:{k.sp:04x}), this one {len(data):#x}")
    base = k.cs << 4
    top = min(ram_below(memory_map, 0), DOS_TOP) >> 4
    extra = [Segment(base, psp(top, cmdline), "PSP"), Segment(base + k.stack, b"\0\0", "return address")]
    return _real(Format.DOS_COM, source, data, k.load_gpa, (k.cs, k.ip), entry, [*services, *extra],
                 ss_sp=(k.cs, k.stack), ds=k.cs)


def psp(top_segment: int, cmdline: str = "") -> bytes:
    """A program segment prefix: ``int 20h`` at 0, the end of the program's memory at 2, the DOS
    call gate ``int 21h; retf`` at 0x50 and the command tail (count, text, CR) at 0x80."""
    tail = (" " + cmdline if cmdline and not cmdline.startswith(" ") else cmdline).encode()[:126]
    block = bytearray(256)
    block[0:2] = b"\xcd\x20"
    block[2:4] = top_segment.to_bytes(2, "little")
    block[0x50:0x53] = b"\xcd\x21\xcb"
    block[0x80] = len(tail)
    block[0x81:0x82 + len(tail)] = tail + b"\r"
    return bytes(block)


def bios_plan(data: bytes, source: Path) -> LoadPlan:
    k = KINDS["bios"]
    return LoadPlan(source.name, Format.BIOS, (), Entry(Mode.RESET, k.ip, cs=k.cs), source,
                    rom=Rom("bios", k.load_gpa, data, k.alias_gpa))


def _gas(source: Path, load: int | None, entry: EntryPoint | None, cmdline: str,
         memory_map: Sequence[MemoryRange], services: bool) -> LoadPlan:
    kind = sources.kind_of(source)
    if kind not in sources.RUNNABLE:
        raise GuestFormatError(f"{source.name}: kind={kind} is part of other guests, not one of its own "
                               f"(kinds: {', '.join(sources.RUNNABLE)})")
    if load is not None and kind != "flat":
        raise GuestFormatError(f"{source.name}: a load address applies to flat guests, not kind={kind}")
    if load is not None and not 0 < load < 0x10000:
        raise GuestFormatError(f"{source.name}: flat GNU as guests are linked below 64 KiB (entered with CS=0), "
                               f"not at {load:#x}")
    built = sources.build_gas(source, load)
    data = built.image.read_bytes()
    if kind == "bios":
        return bios_plan(data, source)
    if kind == "com":
        return com_plan(data, source, _services(services), entry, cmdline, memory_map)
    k = KINDS[kind]
    fmt = Format.BOOT_SECTOR if kind == "boot" else Format.FLAT
    ip = sources.gas_entry(built) if kind == "flat" else k.ip
    regs = {"rdx": 0x80} if kind == "boot" else {}
    return _real(fmt, source, data, k.load_gpa if load is None else load, (0, ip), entry,
                 _services(services), ss_sp=(0, k.stack), regs=regs)


def _real(fmt: Format, source: Path, data: bytes, load: int, start: tuple[int, int], entry: EntryPoint | None,
          extra: Sequence[Segment], *, ss_sp: tuple[int, int] = (0, FLAT_STACK), ds: int | None = None,
          regs: dict[str, int] | None = None) -> LoadPlan:
    """A real-mode plan: ``data`` at ``load``, entered at ``start`` (or the ``entry`` override) with
    DS=ES=FS=GS=``ds`` (default: the entry CS) and SS:SP=``ss_sp``."""
    if load + len(data) > 1 << 20:
        raise GuestFormatError(f"{source.name}: a real-mode image at {load:#x} of {len(data):#x} bytes "
                               "goes past 1 MiB")
    cs, ip = start if entry is None else _segmented(entry) if isinstance(entry, int) else entry
    image = Segment(load, data, "image")
    return LoadPlan(source.name, fmt, (*extra, image), Entry(
        Mode.REAL, ip, cs=cs, ds=start[0] if ds is None else ds, ss=ss_sp[0], sp=ss_sp[1], regs=regs or {}),
        source)


def _segmented(linear: int) -> tuple[int, int]:
    """A real-mode address: 0000:linear below 64 KiB, else linear>>4 : linear&0xf."""
    return (0, linear) if linear < 0x10000 else (linear >> 4, linear & 0xF)


def _services(wanted: bool) -> list[Segment]:
    if not wanted:
        return []
    image = sources.build_gas(sources.SOURCE_DIR / "services.S").image.read_bytes()
    return [Segment(KINDS["services"].load_gpa, image, "real-mode services")]


def _is_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in head
