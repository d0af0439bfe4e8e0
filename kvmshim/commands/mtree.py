"""`kvmshim mtree [GUEST] [-f] [-D] [--json]`: the machine's map, like QEMU's `info mtree`."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..pc import cli as pc_cli
from . import parse_size

if TYPE_CHECKING:
    from ..machine import Machine
    from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("mtree", help="print the machine's memory map like QEMU's `info mtree`")
    p.add_argument("guest", nargs="?", default="hello",
                   help="the guest loaded first: a bundled name or a file of any format `run` takes (default hello)")
    p.add_argument("-f", dest="flatview", action="store_true", help="flat views (with KVM markers)")
    p.add_argument("-D", dest="disabled", action="store_true", help="show disabled regions")
    p.add_argument("--json", action="store_true", help="the trees and flat views as JSON (-f and -D do not apply)")
    p.add_argument("-m", "--ram", type=parse_size, help="RAM size (default 16M; 128M with --machine pc)")
    pc_cli.add_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..machine import Machine

    if args.machine == "pc":
        return pc_cli.mtree(args)
    with Machine(args.ram or parse_size("16M")) as machine:
        machine.load(args.guest)
        print(output(machine, args), end="")
    return 0


def output(machine: Machine, args: argparse.Namespace) -> str:
    """What to print for a machine: `info mtree` text, or with --json memapi.mtree_json as JSON."""
    if not args.json:
        return machine.mtree(flatview=args.flatview, disabled=args.disabled)
    import memapi

    doc = memapi.mtree_json([machine.memory, machine.io_space], accel=machine.kvm_maps)
    return json.dumps(doc, indent=2) + "\n"
