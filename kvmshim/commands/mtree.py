"""`kvmshim mtree [GUEST] [-f] [-D]`: the machine's map, like QEMU's `info mtree`."""
from __future__ import annotations

import argparse

from . import parse_size


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("mtree", help="print the machine's memory map like QEMU's `info mtree`")
    p.add_argument("guest", nargs="?", default="hello")
    p.add_argument("-f", dest="flatview", action="store_true", help="flat views (with KVM markers)")
    p.add_argument("-D", dest="disabled", action="store_true", help="show disabled regions")
    p.add_argument("-m", "--ram", type=parse_size, default=parse_size("16M"))
    return p


def run(args) -> int:
    from ..machine import Machine

    with Machine(args.ram) as machine:
        machine.load(args.guest)
        print(machine.mtree(flatview=args.flatview, disabled=args.disabled), end="")
    return 0
