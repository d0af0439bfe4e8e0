"""The `kvmshim` console script (also `python -m kvmshim`). Each subcommand lives in its own module
under kvmshim/commands/ with ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit status: the subcommand's (the guest's debug-exit status for `run`, the traced command's
for `trace`); ``EXIT_ERROR`` (125) with a ``kvmshim: error:`` line on stderr when kvmshim
itself fails, a bad command line included; 130 after Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .errors import EXIT_ERROR, EXIT_GUEST_FAULT, EXIT_INTERRUPTED

#: Subcommand modules, in help order.
COMMANDS = ("run", "qemu", "mtree", "trace", "dirty_demo", "migrate", "snapshot")
EPILOG = f"""\
exit status:
  run      the guest's debug-exit status (0 for a guest that halts)
  qemu     qemu-system-x86_64's: isa-debug-exit's status, 1 for an option it does not model,
           0 after SIGINT/SIGTERM/SIGHUP ("terminating on signal N"), {EXIT_GUEST_FAULT} for a guest
           fault (where QEMU would stop the VM at its monitor)
  trace    the traced command's status
  {EXIT_ERROR}      kvmshim itself failed (a bad command line, a guest that cannot be built or
           loaded, a guest fault or timeout, a failed ioctl): a 'kvmshim: error:' line on
           stderr says why. A guest may write {EXIT_ERROR} too; only that line tells them apart.
  {EXIT_INTERRUPTED}      interrupted (Ctrl-C)"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one ``kvmshim: error:`` line (no usage block first) and EXIT_ERROR."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        self.exit(EXIT_ERROR, f"kvmshim: error: {command + ': ' if command else ''}{message}\n")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("kvmshim")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvmshim", description="A Python userspace hypervisor shim on KVM.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kvmshim {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module = importlib.import_module(f"kvmshim.commands.{name}")
        module.add_parser(sub).set_defaults(handler=module.run)
    return parser


def _errors() -> tuple[type[BaseException], ...]:
    """The root of each layer's errors: what becomes a ``kvmshim: error:`` line, never a traceback."""
    from guests import GuestError
    from kvm import KvmError
    from listeners.errors import BridgeError
    from memapi import MemApiError

    from .errors import KvmshimError

    return (MemApiError, KvmError, BridgeError, GuestError, KvmshimError, OSError)


def report(err: BaseException) -> None:
    """``kvmshim: error:`` and the message's first line, then its other lines as they are (a tool's
    whole output follows the line that names the cause)."""
    first, _, rest = (str(err) or type(err).__name__).partition("\n")
    sys.stdout.flush()
    print(f"kvmshim: error: {first}" + (f"\n{rest.rstrip()}" if rest.strip() else ""), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the subcommand, and turn each layer's errors into a report and EXIT_ERROR."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler: Callable[[argparse.Namespace], int] = args.handler
    return guarded(lambda: handler(args))


def guarded(command: Callable[[], int]) -> int:
    """*command*'s status, or a report and EXIT_ERROR for each layer's errors, EXIT_INTERRUPTED
    for Ctrl-C: never a traceback (console scripts other than `kvmshim` use it too)."""
    try:
        return command()
    except _errors() as err:
        report(err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
