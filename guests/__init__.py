"""Real-mode guest programs built from GNU as sources (``guests/*.S``).

Each source's first line declares its kind, e.g. ``# kvmshim: kind=flat``. ``build()``
assembles it with ``as --32``, links it with ``ld -T guest.ld`` and extracts a flat
binary with ``objcopy -O binary`` into ``guests/build/NAME.bin``.

Load convention (``spec()`` gives these numbers):

* ``flat``: linked at 0x1000, loaded into RAM at GPA 0x1000, started in real mode with
  CS=DS=ES=SS=0, IP=0x1000, SP=0x8000 (so at most 0x7000 bytes).
* ``bios``: a 64 KiB ROM image mapped like QEMU's pc: at 0xffff0000-0xffffffff plus an
  "isa-bios" alias at 0xf0000-0xfffff. Entered from the x86 reset state (CS selector
  0xf000 with base 0xffff0000, IP 0xfff0), so its reset vector sits at image offset
  0xfff0: a far jump to f000:xxxx, i.e. into the alias.

Guests talk to the kvmshim devices: serial THR 0x3f8 / LSR 0x3fd (bit 5 = THR empty,
polled before each byte), debug-exit port 0x501 (outb status ends the run), test MMIO
device at 0xd0000 (see mmio.S). ``common.inc`` holds the shared port names and macros.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
BUILD_DIR = SOURCE_DIR / "build"
LINKER_SCRIPT = SOURCE_DIR / "guest.ld"
_HEADER = re.compile(r"#\s*kvmshim:\s*(?P<fields>.*)")


class GuestBuildError(RuntimeError):
    """A guest could not be built; the first line says why, the rest is the tool's stderr."""


@dataclass(frozen=True)
class GuestSpec:
    """How to load and enter a guest image."""

    name: str
    kind: str  # "flat" or "bios"
    source: Path
    link_addr: int  # address the image is linked at (offset within its code segment)
    max_size: int
    load_gpa: int  # where the image goes in guest-physical memory
    alias_gpa: int | None  # bios: the isa-bios alias of the image
    cs: int  # entry CS selector (bios: the reset state's, with base 0xffff0000)
    ip: int
    sp: int | None  # None: the guest sets up no stack

    @property
    def binary(self) -> Path:
        return BUILD_DIR / f"{self.name}.bin"


_KINDS = {
    "flat": dict(link_addr=0x1000, max_size=0x7000, load_gpa=0x1000, alias_gpa=None,
                 cs=0, ip=0x1000, sp=0x8000),
    "bios": dict(link_addr=0, max_size=0x10000, load_gpa=0xFFFF0000, alias_gpa=0xF0000,
                 cs=0xF000, ip=0xFFF0, sp=None),
}


def _source(guest: str | Path) -> Path:
    if isinstance(guest, Path) or "/" in guest or guest.endswith(".S"):
        return Path(guest).resolve()
    return SOURCE_DIR / f"{guest}.S"


def available() -> list[str]:
    """Names of the guests in SOURCE_DIR."""
    return sorted(p.stem for p in SOURCE_DIR.glob("*.S"))


def spec(guest: str | Path) -> GuestSpec:
    """Load metadata of a guest (a name in SOURCE_DIR or a path to a .S file)."""
    source = _source(guest)
    try:
        with source.open("rb") as f:
            first_line = f.readline(256).decode("utf-8").rstrip("\n")
    except OSError as e:
        raise GuestBuildError(f"cannot read guest source {source}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise GuestBuildError(f"{source.name}: not a guest source (binary data; guests are GNU as .S files "
                              "whose first line is '# kvmshim: kind=flat' or '# kvmshim: kind=bios')") from None
    header = _HEADER.fullmatch(first_line.strip())
    fields = dict(f.split("=", 1) for f in header["fields"].split() if "=" in f) if header else {}
    kind = fields.get("kind")
    if kind not in _KINDS:
        raise GuestBuildError(f"{source.name}: first line must be '# kvmshim: kind=flat' or "
                              f"'# kvmshim: kind=bios', got {first_line!r}")
    return GuestSpec(name=source.stem, kind=kind, source=source, **_KINDS[kind])


def build(guest: str | Path) -> Path:
    """Assemble and link *guest* into BUILD_DIR/NAME.bin unless that is newer than its inputs."""
    s = spec(guest)
    inputs = (s.source, LINKER_SCRIPT, *SOURCE_DIR.glob("*.inc"))
    if s.binary.exists() and s.binary.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return s.binary
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        obj, elf, image = (Path(tmp) / f"{s.name}.{ext}" for ext in ("o", "elf", "bin"))
        _run(s, "as", "--32", "-I", SOURCE_DIR, "-I", s.source.parent, "-o", obj, s.source)
        _run(s, "ld", "-m", "elf_i386", f"--defsym=LOAD_ADDR={s.link_addr:#x}",
             "-T", LINKER_SCRIPT, "-o", elf, obj)
        _run(s, "objcopy", "-O", "binary", elf, image)
        size = image.stat().st_size
        if size > s.max_size or (s.kind == "bios" and size != s.max_size):
            raise GuestBuildError(f"{s.source.name}: {s.kind} image is {size:#x} bytes, "
                                  f"{'must be' if s.kind == 'bios' else 'limit'} {s.max_size:#x}")
        os.replace(image, s.binary)
    return s.binary


def _run(s: GuestSpec, tool: str, *args: object) -> None:
    if shutil.which(tool) is None:
        raise GuestBuildError(f"{tool} not found on PATH (needed to build {s.source.name}; "
                              "install binutils)")
    proc = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        why = next((line for line in lines if "rror" in line), lines[0] if lines else "")
        raise GuestBuildError(f"{tool} failed on {s.source.name} (exit {proc.returncode}): {why}\n"
                              f"{proc.stderr.strip()}")
