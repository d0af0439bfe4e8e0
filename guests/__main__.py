"""``python -m guests build [NAME...]``: build the named guests (default: all)."""
from __future__ import annotations

import argparse
import sys

from . import GuestBuildError, available, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guests")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="assemble guests into guests/build/NAME.bin").add_argument(
        "names", nargs="*", help="guest names or .S paths (default: all)")
    sub.add_parser("list", help="list the available guests")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(available()))
        return 0
    try:
        for name in args.names or available():
            print(build(name))
    except GuestBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
