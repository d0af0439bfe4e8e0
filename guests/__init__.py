"""Guest programs: the bundled GNU as guests, and the files people bring, turned into load plans.

``plan(FILE)`` builds a source if needed (GNU as, NASM) and returns a pure-data LoadPlan: the
segments to write at guest-physical addresses and the entry CPU state; ``kvmshim.loader``
applies it to a machine. docs/guests.md lists each format's load convention.

Bundled guests (``available()``) talk to the kvmshim devices: serial THR 0x3f8 / LSR 0x3fd
(bit 5 = THR empty, polled before each byte), debug-exit port 0x501 (outb status ends the
run, status is the exit code), test MMIO device at 0xd0000. ``common.inc`` holds the shared
port names and macros, ``ucall.inc``/``ucall-nasm.inc`` the guest side of kvmshim.ucall.

``spec(NAME)`` and ``build(NAME)`` are the older interface: the header-declared convention of
a GNU as guest, and the path of its built image (in the cache, never in this package).
"""
from __future__ import annotations

from .errors import GuestBuildError, GuestError, GuestFormatError, GuestLoadError
from .formats import EntryPoint, parse_entry, plan
from .multiboot import Module
from .plans import Entry, Format, LoadPlan, MemoryRange, Mode, Rom, Segment
from .sources import SOURCE_DIR, GuestSpec, available, build, resolve, spec
from .toolchain import cache_dir

__all__ = [
    "Entry", "EntryPoint", "Format", "GuestBuildError", "GuestError", "GuestFormatError", "GuestLoadError",
    "GuestSpec", "LoadPlan", "MemoryRange", "Mode", "Module", "Rom", "Segment", "SOURCE_DIR", "available",
    "build", "cache_dir", "parse_entry", "plan", "resolve", "spec",
]
