"""`kvmshim run GUEST`: boot a guest on the test machine; its debug-exit status becomes ours."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..pc import cli as pc_cli
from . import parse_size, positive

if TYPE_CHECKING:
    from guests import EntryPoint, Module
    from memapi import AddressSpace

    from ..base import MachineBase
    from . import Subparsers

FORMATS = """\
GUEST is a bundled guest's name (python -m guests list) or a file; the format is chosen by
content, then by extension (docs/guests.md):
  .S .s          GNU as source, flat at 0x1000 entered at _start (or its '# kvmshim: kind=' line)
  .asm .nasm     NASM source: org 0x7c00 boot sector, org 0x100 DOS .COM, otherwise flat
  512 bytes ending 55 AA   boot sector at 0000:7c00, DL=0x80
  .com           DOS .COM: PSP at 0100:0000, entered at 0100:0100
  .bin .img      flat image at 0x1000, entered at 0000:1000
  ELF32 / ELF64  at its program headers, entered at e_entry in 32-bit protected / long mode
  multiboot v1   per its header, EAX=0x2BADB002, EBX=the info block (--append, --initrd)
The guest prints on the serial port (0x3f8) and ends by writing its exit status to the
debug-exit port (0x501)."""


def address(text: str) -> int:
    """An argparse type: a guest-physical address in any base Python reads (0x1000, 4096)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r} (use e.g. 0x2000)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def port(text: str) -> int:
    value = address(text)
    if value > 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {text!r} is past 0xffff")
    return value


def entry_point(text: str) -> EntryPoint:
    import guests

    try:
        return guests.parse_entry(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="boot a guest (a bundled name or a file of any format)", epilog=FORMATS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guest", nargs="?", help="the guest (none with --machine pc)")
    p.add_argument("-m", "--ram", type=parse_size, help="RAM size: 16M (default; 128M with --machine pc), "
                                                        "512k, 1G, 1T, 0x100000")
    p.add_argument("--timeout", type=positive(), default=None, help="stop the guest after this many seconds")
    p.add_argument("--trace-exits", action="store_true",
                   help="print every PIO/MMIO exit on stderr, with the region it reached")
    p.add_argument("--incoming", metavar="URI", help="load a migration stream from URI (unix:PATH, tcp:HOST:PORT, "
                                                     "file:PATH) and resume the guest (kvmshim.migration)")
    load = p.add_argument_group("loading (docs/guests.md)")
    load.add_argument("--load", type=address, metavar="ADDR", help="load a flat image at ADDR instead of 0x1000")
    load.add_argument("--entry", type=entry_point, metavar="SEG:OFF|ADDR",
                      help="enter at SEG:OFF (hex, real mode: 07c0:0000) or at ADDR (32/64-bit guests)")
    load.add_argument("--append", default="", metavar="CMDLINE",
                      help="a multiboot kernel's command line (a .COM's command tail; with --machine pc, "
                           "--kernel's)")
    load.add_argument("--initrd", metavar="'FILE [ARGS],...'",
                      help="multiboot modules, comma-separated, each a file and its command line (as QEMU's)")
    devices = p.add_argument_group("test machine devices")
    devices.add_argument("--debug-exit", choices=("raw", "qemu"), default="raw",
                         help="raw: the byte written is the exit status (default); qemu: QEMU's isa-debug-exit, "
                              "status (value << 1) | 1")
    devices.add_argument("--debug-exit-port", type=port, default=0x501, metavar="PORT",
                         help="the debug-exit port (default 0x501; kvm-unit-tests use 0xf4)")
    devices.add_argument("--strict", action="store_true",
                         help="an access to an unassigned address or port is an error (QEMU ignores it)")
    pc_cli.add_options(p)
    return p


class ExitTrace:
    """--trace-exits: a line on stderr per PIO/MMIO exit, naming the region the access reached (looked
    up in the space's current FlatView as the line is printed)."""

    def __init__(self, spaces: Mapping[str, AddressSpace]) -> None:
        self.spaces = spaces

    def __call__(self, kind: str, addr: int, value: int, size: int, is_write: bool) -> None:
        arrow = "<-" if is_write else "->"
        print(f"[{kind} {addr:#06x} {arrow} {value:#0{2 + 2 * size}x} size {size}{self._region(kind, addr)}]",
              file=sys.stderr)

    def _region(self, kind: str, addr: int) -> str:
        space = self.spaces.get(kind)
        if space is None:
            return ""
        hit = space.current_map.lookup(addr)
        if hit is None:
            return " (unassigned)"
        return f" {hit.mr.name}+{addr - hit.start + hit.offset_in_region:#x}"


def exit_trace(machine: MachineBase) -> ExitTrace:
    return ExitTrace({"pio": machine.io_space, "mmio": machine.memory})


def modules(text: str | None) -> list[Module]:
    """--initrd 'FILE ARGS,FILE2': each module's data from its file, its command line as written."""
    from guests import Module

    if not text:
        return []
    out = []
    for item in text.split(","):
        path = item.strip().split(" ", 1)[0]
        try:
            out.append(Module(Path(path).read_bytes(), item.strip()))
        except OSError as err:
            raise UsageError(f"--initrd: cannot read {path!r}: {err.strerror}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from ..machine import Machine, stdout_writer

    if args.incoming:
        from ..migration.cli import run_incoming
        return run_incoming(args)
    if args.machine == "pc":
        given = [f"--{name}" for name in ("load", "entry", "strict") if getattr(args, name)]
        if args.guest is not None or given:
            test_only = ([args.guest] if args.guest is not None else []) + given
            raise UsageError(f"--machine pc boots its own firmware: drop {' '.join(test_only)} (for the test machine)")
        return pc_cli.run(args, exit_trace if args.trace_exits else None)
    if pc_only := pc_cli.pc_only_given(args):
        raise UsageError(f"{' '.join(pc_only)}: only with --machine pc")
    if args.guest is None:
        raise UsageError("a guest is required: a bundled name (python -m guests list) or a file; or --machine pc")
    with Machine(args.ram or parse_size("16M"), on_output=stdout_writer, debug_exit=args.debug_exit,
                 debug_exit_port=args.debug_exit_port, strict_unassigned=args.strict) as machine:
        machine.load(args.guest, load=args.load, entry=args.entry, cmdline=args.append,
                     modules=modules(args.initrd))
        if args.trace_exits:
            machine.runner.on_exit = exit_trace(machine)
        machine.run(args.timeout)
        return machine.exit_status
