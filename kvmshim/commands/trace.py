"""`kvmshim trace [--json] [-o FILE] [--summary] -- COMMAND...`: the KVM ioctls of a command, decoded."""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("trace", help="run a command and print its KVM ioctls, decoded (like strace)",
                       description="Run COMMAND under ptrace (threads, forks and execs followed) and "
                                   "print every ioctl on /dev/kvm, VM and vCPU fds, one per line.")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("-o", dest="output", metavar="FILE", help="write the trace to FILE (default: stderr)")
    p.add_argument("--summary", action="store_true",
                   help="print only counts per ioctl and exit reason, and the final memslots")
    p.add_argument("command", nargs="+", metavar="COMMAND", help="the command, after --")
    return p


def run(args) -> int:
    from ..trace import Summary, Tracer, format_event, format_summary

    with open(args.output, "w") if args.output else nullcontext(sys.stderr) as out:
        summary = Summary()
        tracer = Tracer(keep_events=False)

        def show(event) -> None:
            print(event.to_json() if args.json else format_event(event, tracer.main_pid), file=out, flush=True)

        tracer.on_event = summary.add if args.summary else show
        status = tracer.run(args.command).returncode
        if args.summary:
            out.write(json.dumps({"summary": summary.to_dict()}) + "\n" if args.json else format_summary(summary))
    return status
