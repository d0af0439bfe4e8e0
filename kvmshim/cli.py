"""The `kvmshim` console script. Each subcommand lives in its own module under
kvmshim/commands/ with ``add_parser(subparsers)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: Subcommand modules, in help order.
COMMANDS = ("run", "qemu", "mtree", "trace", "dirty_demo")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (status 2) like our own, without the usage block first."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kvmshim", description="A Python userspace hypervisor shim on KVM.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"kvmshim.commands.{name}")
        module.add_parser(sub).set_defaults(handler=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, run the subcommand, and turn our typed errors into one line and status 2."""
    args = _parser().parse_args(argv)
    from guests import GuestBuildError
    from kvm import KvmError
    from listeners.errors import BridgeError
    from memapi import MemApiError

    try:
        return args.handler(args)
    except (GuestBuildError, KvmError, BridgeError, MemApiError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"kvmshim: error: {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
