"""The `kvmshim` console script: `kvmshim run GUEST`, `kvmshim mtree GUEST`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'16M', '512k', '0x100000' or '1048576' -> bytes."""
    value = text.strip().lower()
    scale = SIZE_SUFFIXES.get(value[-1:], 1)
    number = value[:-1] if scale != 1 else value
    try:
        size = int(number, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 16M, 512k or 0x100000)") from None
    if size <= 0 or size % 4096:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a positive multiple of 4 KiB")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmshim", description="A Python userspace hypervisor shim on KVM.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a guest (a name from guests/ or a .S/.bin path)")
    run.add_argument("guest")
    run.add_argument("-m", "--ram", type=parse_size, default=parse_size("16M"), help="RAM size (default 16M)")
    run.add_argument("--timeout", type=float, default=None, help="stop the guest after this many seconds")
    run.add_argument("--trace-exits", action="store_true", help="print every PIO/MMIO exit on stderr")
    mtree = sub.add_parser("mtree", help="print the machine's memory map like QEMU's `info mtree`")
    mtree.add_argument("guest", nargs="?", default="hello")
    mtree.add_argument("-f", dest="flatview", action="store_true", help="flat views (with KVM markers)")
    mtree.add_argument("-D", dest="disabled", action="store_true", help="show disabled regions")
    mtree.add_argument("-m", "--ram", type=parse_size, default=parse_size("16M"))
    return parser


def _trace(kind: str, addr: int, value: int, size: int, is_write: bool) -> None:
    arrow = "<-" if is_write else "->"
    print(f"[{kind} {addr:#06x} {arrow} {value:#0{2 + 2 * size}x} size {size}]", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from guests import GuestBuildError
    from kvm import KvmError
    from listeners.vcpu_runner import GuestFault
    from memapi import MemApiError

    from .machine import Machine, stdout_writer

    try:
        with Machine(args.ram, on_output=stdout_writer) as machine:
            machine.load(args.guest)
            if args.command == "mtree":
                print(machine.mtree(flatview=args.flatview, disabled=args.disabled), end="")
                return 0
            if args.trace_exits:
                machine.runner.on_exit = _trace
            machine.run(args.timeout)
            return machine.exit_status
    except (GuestBuildError, KvmError, GuestFault, MemApiError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"kvmshim: error: {first}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
