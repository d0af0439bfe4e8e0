"""Guest names, GNU as source kinds and their build: the bundled guests live next to this file.

A GNU as source may start with ``# kvmshim: kind=KIND``; without that line it is ``flat``.
Each kind fixes the link address and the size rule of the image (see ``KINDS``).
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from . import elf, toolchain
from .errors import GuestBuildError

SOURCE_DIR = toolchain.SOURCE_DIR
PSP_SEGMENT = 0x0100  # where a .COM program's PSP goes (its code at PSP:0100, linear 0x1100)
_HEADER = re.compile(r"#\s*kvmshim:\s*(?P<fields>.*)")
_SUFFIXES = (".S", ".s", ".asm", ".nasm", ".com", ".bin", ".img", ".elf")


@dataclass(frozen=True)
class Kind:
    """A GNU as source's load convention: linked at ``link_addr``, entered at cs:ip with SS:SP=0:sp."""

    link_addr: int
    max_size: int
    load_gpa: int
    cs: int
    ip: int
    sp: int | None
    exact_size: bool = False
    alias_gpa: int | None = None

    @property
    def stack(self) -> int:
        """SP at entry, for the kinds that start on a stack of their own (not bios or services)."""
        assert self.sp is not None, "this kind of guest has no stack of its own"
        return self.sp


KINDS = {
    "flat": Kind(link_addr=0x1000, max_size=0x7000, load_gpa=0x1000, cs=0, ip=0x1000, sp=0x8000),
    "boot": Kind(link_addr=0x7C00, max_size=0x200, load_gpa=0x7C00, cs=0, ip=0x7C00, sp=0x7C00),
    "com": Kind(link_addr=0x100, max_size=0xFE00, load_gpa=(PSP_SEGMENT << 4) + 0x100, cs=PSP_SEGMENT,
                ip=0x100, sp=0xFFFE),
    # A 64 KiB ROM at the top of 4 GiB, aliased at 0xf0000 (QEMU's pc.bios and isa-bios); the reset
    # vector is its offset 0xfff0, code runs with CS=0xf000 so segment offsets equal image offsets.
    "bios": Kind(link_addr=0, max_size=0x10000, exact_size=True, load_gpa=0xFFFF0000, alias_gpa=0xF0000,
                 cs=0xF000, ip=0xFFF0, sp=None),
    # services.S: the IVT, BIOS data area and interrupt handlers of a machine without a BIOS.
    "services": Kind(link_addr=0, max_size=0x1000, load_gpa=0, cs=0, ip=0, sp=None),
}
RUNNABLE = ("flat", "boot", "com", "bios")


@dataclass(frozen=True)
class GuestSpec:
    """How to load and enter a GNU as guest of a given kind (``plan()`` gives the full picture,
    with the entry point from ``_start``)."""

    name: str
    kind: str
    source: Path
    link_addr: int
    max_size: int
    load_gpa: int
    alias_gpa: int | None
    cs: int
    ip: int
    sp: int | None


def available() -> list[str]:
    """Names of the bundled guests (the runnable GNU as sources next to this module)."""
    return sorted(p.stem for p in SOURCE_DIR.glob("*.S") if _header_kind(p) in RUNNABLE)


def resolve(guest: str | Path) -> Path:
    """The file a guest argument names: a path (anything with a '/' or a known suffix, or an existing
    file) or the name of a bundled guest; an unknown name lists the bundled ones."""
    text = str(guest)
    if isinstance(guest, Path) or "/" in text or text.endswith(_SUFFIXES):
        path = Path(guest).resolve()
        if not path.exists():  # one message for every format, before any tool runs
            raise GuestBuildError(f"cannot read guest source {path}: {os.strerror(errno.ENOENT)}")
        return path
    bundled = SOURCE_DIR / f"{text}.S"
    if bundled.is_file() and _header_kind(bundled) in RUNNABLE:
        return bundled
    if Path(text).is_file():
        return Path(text).resolve()
    raise GuestBuildError(f"cannot read guest source {text!r}: no bundled guest of that name (bundled: "
                          f"{', '.join(available())}; or give the path of a .S, .asm, .com, .bin or ELF file)")


def spec(guest: str | Path) -> GuestSpec:
    """The load convention of a GNU as guest from its ``# kvmshim: kind=`` first line, which this
    function (unlike ``plan()``) requires, as the callers from before header-less sources expect."""
    source = resolve(guest)
    kind = _header_kind(source, required=True)
    k = KINDS[kind]
    return GuestSpec(name=source.stem, kind=kind, source=source, link_addr=k.link_addr, max_size=k.max_size,
                     load_gpa=k.load_gpa, alias_gpa=k.alias_gpa, cs=k.cs, ip=k.ip, sp=k.sp)


def kind_of(source: Path) -> str:
    """The kind a GNU as source declares, ``flat`` without a header."""
    return _header_kind(source) or "flat"


def build(guest: str | Path, link_addr: int | None = None) -> Path:
    """Build a guest source (GNU as or NASM) into the cache and return its flat image."""
    source = resolve(guest)
    if source.suffix.lower() in (".asm", ".nasm"):
        return toolchain.nasm(source).image
    return build_gas(source, link_addr).image


def build_gas(source: Path, link_addr: int | None = None, kind: str | None = None) -> toolchain.GasBuild:
    """Build a GNU as source of ``kind`` (default: its header's) linked at ``link_addr`` (default: the
    kind's), and check the image against the kind's size rule."""
    kind = kind or kind_of(source)
    k = KINDS[kind]
    built = toolchain.gas(source, k.link_addr if link_addr is None else link_addr)
    size = built.image.stat().st_size
    if size > k.max_size or (k.exact_size and size != k.max_size):
        raise GuestBuildError(f"{source.name}: {kind} image is {size:#x} bytes, "
                              f"{'must be' if k.exact_size else 'limit'} {k.max_size:#x}")
    return built


def gas_entry(built: toolchain.GasBuild) -> int:
    """The linked ELF's entry point (``_start``; ld falls back to the start of .text)."""
    return elf.parse(built.elf.read_bytes(), built.elf.name).entry


@overload
def _header_kind(source: Path, required: Literal[True]) -> str: ...
@overload
def _header_kind(source: Path, required: bool = False) -> str | None: ...
def _header_kind(source: Path, required: bool = False) -> str | None:
    """The kind named on the first line, None without a header; GuestBuildError for a bad header
    (or, if ``required``, a missing one)."""
    try:
        with source.open("rb") as f:
            first_line = f.readline(256).decode("utf-8").rstrip("\n")
    except OSError as e:
        raise GuestBuildError(f"cannot read guest source {source}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise GuestBuildError(f"{source.name}: not a guest source (binary data; guests are GNU as .S files "
                              "whose first line is '# kvmshim: kind=flat' or '# kvmshim: kind=bios')") from None
    header = _HEADER.fullmatch(first_line.strip())
    if header is None and not required:
        return None
    fields = dict(f.split("=", 1) for f in header["fields"].split() if "=" in f) if header else {}
    kind = fields.get("kind")
    if kind not in KINDS:
        raise GuestBuildError(f"{source.name}: first line must be '# kvmshim: kind=flat' or "
                              f"'# kvmshim: kind=bios' (or boot, com), got {first_line!r}")
    return kind
