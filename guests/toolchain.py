"""Build guest sources with the system's tools into a cache keyed by everything the build reads.

``.S`` goes through the C preprocessor (as gcc does), then ``as --32``, ``ld -T guest.ld`` and
``objcopy -O binary``; ``.s`` skips the preprocessor; ``.asm``/``.nasm`` is ``nasm -f bin``.
The cache lives in $XDG_CACHE_HOME/kvmshim/guests (default ~/.cache/kvmshim/guests), never in
the package, so a read-only install works. An entry's name is the source's stem plus a hash
of the recipe and of the path and content of the source and of every file it includes,
recursively: two different ``hello.S`` never share an entry, and editing any included file
rebuilds. The tools run in an empty directory so that only the search path below decides
what an include finds (the source's folder first, then the bundled guests' folder).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import GuestBuildError

SOURCE_DIR = Path(__file__).resolve().parent
LINKER_SCRIPT = SOURCE_DIR / "guest.ld"
_RECIPE_VERSION = "2"
_PACKAGES = {"cpp": "cpp", "as": "binutils", "ld": "binutils", "objcopy": "binutils", "nasm": "nasm"}

# .include/.incbin (GNU as), #include (cpp), %include/incbin (NASM), optionally after a label.
_INCLUDE = re.compile(r"""^[ \t]*(?:[\w.$@?]+:[ \t]*)?(\.include|\.incbin|\#[ \t]*include|%include|incbin)"""
                      r"""[ \t]+["'<]([^"'>\n]+)["'>]""", re.M | re.I)
# The line of a tool's output that names the cause: ld's context lines ("in function `x':") end in ':'.
_CAUSE = re.compile(r"error|undefined reference|multiple definition|relocation truncated|cannot find|"
                    r"cannot open|overlaps|will not fit|no such file", re.I)


@dataclass(frozen=True)
class GasBuild:
    """A GNU as cache entry: the flat image and the linked ELF it was extracted from."""

    image: Path
    elf: Path


@dataclass(frozen=True)
class NasmBuild:
    """A NASM cache entry: the image and NASM's map file, which records the program's origin."""

    image: Path
    map_file: Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/kvmshim/guests, or ~/.cache/kvmshim/guests (XDG ignores a relative value)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "kvmshim" / "guests"


def search_path(source: Path) -> tuple[Path, ...]:
    """Where includes are looked up: the source's folder, then the bundled guests' folder."""
    return tuple(dict.fromkeys((source.parent, SOURCE_DIR)))


def inputs(source: Path) -> list[Path]:
    """The source and every file it includes, recursively, found the way the tools find them:
    ``#include "x"`` first next to the including file (cpp), everything else on the search path."""
    path = search_path(source)
    found: list[Path] = []
    pending = [source]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        text = current.read_bytes().decode("latin-1")
        for directive, name in _INCLUDE.findall(text):
            dirs = ((current.parent,) if directive.startswith("#") else ()) + path
            hit = next((d / name for d in dirs if (d / name).is_file()), None)
            if hit is not None:
                pending.append(hit.resolve())
    return found


def gas(source: Path, link_addr: int) -> GasBuild:
    """Preprocess (``.S``), assemble, link at ``link_addr`` and extract the flat image."""
    includes = [flag for d in search_path(source) for flag in ("-I", str(d))]
    stem = source.stem

    def produce(out: Path) -> None:
        assembled = source
        if source.suffix == ".S":
            assembled = out / f"{stem}.i"
            _run("cpp", "-undef", "-nostdinc", "-x", "assembler-with-cpp", *includes, "-o", assembled, source,
                 source=source, cwd=out)
        _run("as", "--32", *includes, "-o", f"{stem}.o", assembled, source=source, cwd=out)
        _run("ld", "-m", "elf_i386", f"--defsym=LOAD_ADDR={link_addr:#x}", "-T", LINKER_SCRIPT,
             "-o", f"{stem}.elf", f"{stem}.o", source=source, cwd=out)
        _run("objcopy", "-O", "binary", f"{stem}.elf", f"{stem}.bin", source=source, cwd=out)

    entry = _cached(source, ("gas", f"{link_addr:#x}"), [LINKER_SCRIPT], produce)
    return GasBuild(entry / f"{stem}.bin", entry / f"{stem}.elf")


def nasm(source: Path) -> NasmBuild:
    """``nasm -f bin``, with a map file that records the program's origin (its ``org``)."""
    includes = [flag for d in search_path(source) for flag in ("-I", f"{d}{os.sep}")]
    stem = source.stem

    def produce(out: Path) -> None:
        _run("nasm", "-f", "bin", *includes, "--before", f"[map brief {stem}.map]", "-o", f"{stem}.bin", source,
             source=source, cwd=out)

    entry = _cached(source, ("nasm",), [], produce)
    return NasmBuild(entry / f"{stem}.bin", entry / f"{stem}.map")


def nasm_origin(map_file: Path) -> int:
    """The ``org`` NASM reports in a map file ("-- Program origin --" and a hex number)."""
    match = re.search(r"Program origin -+\s+([0-9A-Fa-f]+)", map_file.read_text())
    return int(match[1], 16) if match else 0


def _cached(source: Path, recipe: Sequence[str], extra: Sequence[Path], produce: Callable[[Path], None]) -> Path:
    """The cache entry for this recipe and these inputs, produced first if missing."""
    digest = hashlib.sha256("\0".join((_RECIPE_VERSION, *recipe)).encode())
    for path in (*inputs(source), *extra):
        digest.update(f"\0{path}\0".encode())
        digest.update(path.read_bytes())
    root = cache_dir()
    entry = root / f"{source.stem}-{digest.hexdigest()[:20]}"
    if entry.is_dir():
        return entry
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    except OSError as err:
        raise GuestBuildError(f"cannot write the guest cache {root}: {err.strerror} "
                              "(set XDG_CACHE_HOME to a writable directory)") from err
    try:
        out = tmp / "out"
        out.mkdir()
        produce(out)
        try:
            os.rename(out, entry)
        except OSError:
            if not entry.is_dir():  # else a concurrent build of the same inputs won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _run(tool: str, *args: object, source: Path, cwd: Path) -> None:
    if shutil.which(tool) is None:
        raise GuestBuildError(f"{tool} not found on PATH (needed to build {source.name}; "
                              f"install {_PACKAGES[tool]})")
    proc = subprocess.run([tool, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        output = "\n".join(part.strip() for part in (proc.stderr, proc.stdout) if part.strip())
        raise GuestBuildError(f"{tool} failed on {source.name} (exit {proc.returncode}): "
                              f"{cause(output.splitlines())}\n{output}")


def cause(lines: Sequence[str]) -> str:
    """The line that names why a tool failed: the first error line that is not mere context."""
    named = [line for line in lines if _CAUSE.search(line) and "warning:" not in line.lower()]
    return next((line for line in named if not line.rstrip().endswith(":")),
                named[0] if named else (lines[0] if lines else "no output"))
