"""`kvmshim run ... --incoming URI`: build the machine the command line describes, load the stream
that arrives at URI into it, resume the vCPUs that ran on the source and run to the guest's end.

As with QEMU's ``-incoming``, the destination is started with the source's command line (guest,
RAM size, devices; or ``--machine pc`` and its options); a stream from another kind of machine
is refused before anything is loaded. The exit status is the guest's; a failed stream is a
``kvmshim: error:`` line and kvmshim's own status, like any other failure.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from ..base import MachineBase
from ..errors import UsageError
from .incoming import incoming, resume

#: How long the destination waits for a source to connect (seconds).
ACCEPT_TIMEOUT = 120.0


def run_incoming(args: argparse.Namespace) -> int:
    if args.machine != "pc" and args.guest is None:
        raise UsageError("--incoming: the guest the source runs is required (or --machine pc)")
    from ..pc.machine import PcMachine

    with _destination(args) as machine, ExitStack() as stack:
        if isinstance(machine, PcMachine):
            from ..chardev import open_chardevs

            open_chardevs(stack, machine, quit=machine.stop)
        stats = incoming(machine, args.incoming, timeout=ACCEPT_TIMEOUT)
        print(f"kvmshim: incoming: {stats.pages} pages in {stats.rounds} rounds, {stats.bytes_received} bytes "
              f"from {args.incoming}; resuming", file=sys.stderr, flush=True)
        for thread in resume(machine, stats, args.timeout):
            thread.join()
        return getattr(machine, "exit_status", 0)


def _destination(args: argparse.Namespace) -> MachineBase:
    """The machine `kvmshim run` would build from ``args``, its guest loaded (the stream overwrites
    the guest's memory, but a ROM it brings must exist on both sides)."""
    from ..commands.run import modules
    from ..machine import Machine, stdout_writer

    if args.machine == "pc":
        from ..pc import cli as pc_cli
        from ..pc.machine import PcMachine

        return PcMachine(pc_cli.config(args), incoming=True)
    machine = Machine(args.ram or 16 << 20, on_output=stdout_writer, debug_exit=args.debug_exit,
                      debug_exit_port=args.debug_exit_port, strict_unassigned=args.strict)
    try:
        machine.load(args.guest, load=args.load, entry=args.entry, cmdline=args.append, modules=modules(args.initrd))
    except BaseException:
        machine.close()
        raise
    return machine
