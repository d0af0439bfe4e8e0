"""`kvmshim run GUEST`: boot a guest; its debug-exit status becomes ours."""
from __future__ import annotations

import argparse
import sys

from ..pc import cli as pc_cli
from . import parse_size, positive


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="boot a guest (a name from guests/ or a .S path)")
    p.add_argument("guest", nargs="?", help="the guest (none with --machine pc)")
    p.add_argument("-m", "--ram", type=parse_size, help="RAM size (default 16M; 128M with --machine pc)")
    p.add_argument("--timeout", type=positive(), default=None, help="stop the guest after this many seconds")
    p.add_argument("--trace-exits", action="store_true", help="print every PIO/MMIO exit on stderr")
    p.add_argument("--incoming", metavar="URI", help="load a migration stream from URI (unix:PATH, tcp:HOST:PORT, "
                                                     "file:PATH) and resume the guest (kvmshim.migration)")
    pc_cli.add_options(p)
    return p


def _trace(kind: str, addr: int, value: int, size: int, is_write: bool) -> None:
    arrow = "<-" if is_write else "->"
    print(f"[{kind} {addr:#06x} {arrow} {value:#0{2 + 2 * size}x} size {size}]", file=sys.stderr)


def run(args) -> int:
    from ..machine import Machine, stdout_writer

    if args.incoming:
        from ..migration.cli import run_incoming
        return run_incoming(args)
    if args.machine == "pc":
        return pc_cli.run(args, _trace if args.trace_exits else None)
    if args.guest is None:
        print("kvmshim run: error: a guest is required (or --machine pc)", file=sys.stderr)
        return 2
    with Machine(args.ram or parse_size("16M"), on_output=stdout_writer) as machine:
        machine.load(args.guest)
        if args.trace_exits:
            machine.runner.on_exit = _trace
        machine.run(args.timeout)
        return machine.exit_status
