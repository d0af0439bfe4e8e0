"""`kvmshim qemu ARGS...` (also the `kvmshim-qemu` script): QEMU's command line, on kvmshim's pc.

The arguments are QEMU's, read by kvmshim.qemu_options (any option kvmshim does not model is
one line and status 1, as QEMU fails). The guest runs until isa-debug-exit (status ``(v << 1)
| 1``, as QEMU), a reset or shutdown request (0, kvmshim does not reboot), Ctrl-A x on a mux'd
stdio serial port (``-nographic``, ``-serial mon:stdio``; plain ``-serial stdio`` hands Ctrl-A to
the guest, as QEMU does), or SIGINT (Ctrl-C), SIGTERM or SIGHUP, which end the run as QEMU does:
"terminating on signal N", the disk images flushed and closed, status 0. A guest fault KVM cannot
go on from (an emulation failure, say) is one line and ``EXIT_GUEST_FAULT`` (2): QEMU would stop
the VM and wait at its monitor, which kvmshim does not have, and an odd status or 1 would read as
a debug-exit or a kvm-unit-tests pass.
kvm-unit-tests' run_tests.sh can use it: ``QEMU=$(which kvmshim-qemu)``.
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Subparsers

PROG = "kvmshim qemu"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("qemu", help="run the pc machine from a qemu-system-x86_64 command line",
                       add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="QEMU's options (kvmshim qemu -h lists them)")
    return p


def run(args: argparse.Namespace) -> int:
    return qemu(args.args)


def main(argv: Sequence[str] | None = None) -> int:
    """The `kvmshim-qemu` console script: `kvmshim qemu`'s statuses and error lines."""
    from ..cli import guarded

    return guarded(lambda: qemu(sys.argv[1:] if argv is None else argv))


class _Terminated(Exception):
    """SIGTERM or SIGHUP arrived: the run ends as after Ctrl-C, through every ``finally``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def qemu(argv: Sequence[str]) -> int:
    from listeners.vcpu_runner import GuestFault, TripleFault

    from ..chardev import open_chardevs
    from ..errors import EXIT_GUEST_FAULT, KvmshimError
    from ..pc.machine import PcMachine
    from ..qemu_config import QemuInfo
    from ..qemu_options import QemuOptionError, parse_command_line

    try:
        config = parse_command_line(list(argv))
    except QemuOptionError as err:
        print(err.line, file=sys.stderr)
        return 1
    if isinstance(config, QemuInfo):
        print(config.text, end="" if config.text.endswith("\n") else "\n")
        return 0
    for warning in config.warnings:
        print(f"{PROG}: {warning}", file=sys.stderr)
    try:
        machine = PcMachine(config)
    except OSError as err:  # QEMU's wording: "could not open kernel file ..."
        print(f"{PROG}: {err.strerror or err}", file=sys.stderr)
        return 1
    except KvmshimError as err:  # an unknown CPU model or feature, a disk it cannot use, ...
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    with machine, ExitStack() as stack:
        for warning in machine.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        open_chardevs(stack, machine, quit=machine.stop)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            stack.callback(signal.signal, signum, signal.signal(signum, _raise_terminated))
        if config.display == "curses" and machine.board.vga is not None:
            from ..screen import TerminalScreen

            stack.enter_context(TerminalScreen(machine.board.vga, sys.stdout))  # the text screen, redrawn live
        try:
            machine.boot(timeout=None)
        except TripleFault:
            if not config.no_reboot:
                print(f"{PROG}: the guest triple-faulted; kvmshim does not reset, so it stops", file=sys.stderr)
        except GuestFault as err:  # QEMU stops the VM and waits; with no monitor, kvmshim exits
            print(f"{PROG}: {err}; the guest is stopped", file=sys.stderr)
            return EXIT_GUEST_FAULT
        except (KeyboardInterrupt, _Terminated) as stop:  # QEMU's words and status
            received = stop.signum if isinstance(stop, _Terminated) else int(signal.SIGINT)
            print(f"{PROG}: terminating on signal {received}", file=sys.stderr)
            return 0
        if machine.reset_requested and not config.no_reboot:
            print(f"{PROG}: the guest asked for a reset; kvmshim does not reset, so it stops", file=sys.stderr)
        return machine.exit_status
