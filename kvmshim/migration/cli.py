"""`kvmshim run ... --incoming URI`: build the machine the command line describes, load the stream
that arrives at URI into it, resume the vCPUs that ran on the source and run to the guest's end.

As with QEMU's ``-incoming``, the destination is started with the source's command line (guest,
RAM size, machine); a stream from another kind of machine is refused before anything is loaded.
The exit status is the guest's (2 with a one-line error if the stream fails).
"""
from __future__ import annotations

import argparse
import sys

from ..base import MachineBase
from .errors import MigrationError
from .incoming import incoming, resume

#: How long the destination waits for a source to connect (seconds).
ACCEPT_TIMEOUT = 120.0


def run_incoming(args: argparse.Namespace) -> int:
    if args.machine != "pc" and args.guest is None:
        print("kvmshim run: error: a guest is required (or --machine pc)", file=sys.stderr)
        return 2
    with _destination(args) as machine:
        try:
            stats = incoming(machine, args.incoming, timeout=ACCEPT_TIMEOUT)
        except MigrationError as err:
            print(f"kvmshim: error: incoming migration failed: {str(err).splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"kvmshim: incoming: {stats.pages} pages in {stats.rounds} rounds, {stats.bytes_received} bytes "
              f"from {args.incoming}; resuming", file=sys.stderr, flush=True)
        for thread in resume(machine, stats, args.timeout):
            thread.join()
        return getattr(machine, "exit_status", 0)


def _destination(args: argparse.Namespace) -> MachineBase:
    """The machine ``kvmshim run`` would build, its guest loaded (the stream overwrites it)."""
    from ..machine import Machine, stdout_writer

    if args.machine == "pc":
        from ..pc.machine import DEFAULT_RAM, PcMachine

        return PcMachine(args.ram or DEFAULT_RAM, args.bios, on_output=stdout_writer)
    machine = Machine(args.ram or 16 << 20, on_output=stdout_writer)
    try:
        machine.load(args.guest)
    except BaseException:
        machine.close()
        raise
    return machine
