"""``python -m guests build [GUEST...]`` builds guests (default: the bundled ones) into the cache;
``python -m guests list`` names the bundled guests; ``python -m guests plan FILE`` shows a load plan."""
from __future__ import annotations

import argparse
import os
import sys

from . import GuestError, available, build, plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guests")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build guests into the cache, print the images' paths").add_argument(
        "names", nargs="*", help="guest names or source paths (default: every bundled guest)")
    sub.add_parser("list", help="list the bundled guests")
    sub.add_parser("plan", help="print the load plan of a guest").add_argument("guest")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(available()))
        elif args.command == "plan":
            print(plan(args.guest).describe())
        else:
            for name in args.names or available():
                print(build(name))
        sys.stdout.flush()
    except GuestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # a reader such as `head` left early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
