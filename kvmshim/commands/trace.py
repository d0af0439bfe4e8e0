"""`kvmshim trace [--json] [-o FILE] [--summary] -- COMMAND...`: the KVM ioctls of a command, decoded.

The trace goes to stderr or FILE through a LineWriter: whole lines, one write(2) each, so they
never interleave with what the traced command writes to the same terminal or pipe.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..trace import IoctlEvent
    from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("trace", help="run a command and print its KVM ioctls, decoded (like strace)",
                       description="Run COMMAND under ptrace (threads, forks and execs followed) and "
                                   "print every ioctl on /dev/kvm, VM and vCPU fds, one per line.")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("-o", dest="output", metavar="FILE", help="write the trace to FILE (default: stderr)")
    p.add_argument("--summary", action="store_true",
                   help="print only counts per ioctl and exit reason, and the final memslots")
    p.add_argument("command", nargs="+", metavar="COMMAND", help="the command, after --")
    return p


class StreamLines:
    """LineWriter's ``line()`` on a text stream that has no fd (a caller replaced sys.stderr)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None


def run(args: argparse.Namespace) -> int:
    from ..trace import LineWriter, Summary, Tracer, format_event, format_summary

    sys.stderr.flush()  # what kvmshim wrote before goes out before the first trace line
    fd = (os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666) if args.output
          else _stderr_fd())
    try:
        out = LineWriter(fd) if fd is not None else StreamLines(sys.stderr)
        summary = Summary()
        tracer = Tracer(keep_events=False)

        def show(event: IoctlEvent) -> None:
            out.line(event.to_json() if args.json else format_event(event, tracer.main_pid))

        tracer.on_event = summary.add if args.summary else show
        status = tracer.run(args.command).returncode
        if args.summary and args.json:
            out.line(json.dumps({"summary": summary.to_dict()}))
        elif args.summary:
            for line in format_summary(summary).splitlines():
                out.line(line)
    finally:
        if args.output and fd is not None:
            os.close(fd)
    return status
