"""`kvmshim migrate [GUEST] [-m SIZE] [--downtime-ms N] [--bandwidth MB/s] [--json] [--png FILE]`.

The live-migration demo. The guest (by default the bundled sweeper-check, which dirties pages
all along and checks its own memory at the end) runs in this process; a destination process is
started with ``kvmshim run GUEST -m SIZE --incoming URI``; after ``--after`` ms the guest is
migrated while it runs. Printed: each round's pages, dirty rate and time, then the downtime, the
bytes sent, whether every RAM page on the destination equalled the source's at the stop, and the
guest's exit status on the destination (sweeper-check's 0 means its memory was intact). A failed
migration's error carries the destination's error lines under the source's.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..plots import format_size
from . import parse_size, positive

if TYPE_CHECKING:
    from ..machine import Machine
    from ..migration import MigrationStats, RoundStats
    from . import Subparsers

GUEST = "sweeper-check"
#: sweeper-check sweeps RAM from 1 MiB up (below: the guest, and the test machine's MMIO and ROM).
FIRST_PAGE = 0x100
PAGE = 4096
MiB = 1 << 20
DESTINATION_TIMEOUT = 120.0
#: How long a failed migration waits for the destination to end and say why (seconds).
DESTINATION_ERROR_WAIT = 10.0


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("migrate", help="live-migrate a running guest to a new process and check it arrived whole")
    p.add_argument("guest", nargs="?", default=GUEST, help=f"the guest (default {GUEST}: it checks its memory)")
    p.add_argument("-m", "--ram", type=parse_size, default=parse_size("64M"), help="RAM size (default 64M)")
    p.add_argument("--downtime-ms", type=positive(), default=50.0, metavar="N", help="downtime target (default 50)")
    p.add_argument("--bandwidth", type=positive(), default=None, metavar="MB/s", help="link limit (default none)")
    p.add_argument("--max-rounds", type=positive(int), default=30, metavar="N", help="pre-copy rounds at most")
    p.add_argument("--no-auto-converge", dest="auto_converge", action="store_false",
                   help="never throttle the vCPUs")
    p.add_argument("--transport", choices=("unix", "tcp"), default="unix", help="unix socket or TCP on loopback")
    p.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    p.add_argument("--png", type=Path, metavar="FILE", help="draw pages sent and dirty rate per round")
    add_sweeper_options(p)
    p.add_argument("--after", type=positive(), default=500.0, metavar="MS",
                   help="let the guest run this long before migrating (default 500)")
    return p


def add_sweeper_options(p: argparse.ArgumentParser) -> None:
    sweep = p.add_argument_group("sweeper-check")
    sweep.add_argument("--per-tick", type=positive(int), default=16, help="pages rewritten per tick (default 16)")
    sweep.add_argument("--tick-ms", type=float, default=1.0, metavar="MS",
                       help="tick period, TSC-paced (default 1; 0: as fast as it runs)")
    sweep.add_argument("--seconds", type=positive(), default=3.0, metavar="N",
                       help="run this long (ticks x period) before the check (default 3)")


def load_guest(machine: Machine, guest: str = GUEST, *, per_tick: int = 16, tick_ms: float = 1.0,
               seconds: float = 3.0) -> str:
    """Load ``guest``; sweeper-check sweeps all RAM above 1 MiB, ``per_tick`` random pages every
    ``tick_ms`` (0: as fast as the vCPU goes, about 5000 ticks a second), for ``seconds``."""
    spec = machine.load(guest)
    if spec.name == GUEST:
        khz = machine.vcpu.get_tsc_khz()
        tick_tsc = int(tick_ms * khz)
        if not 0 <= tick_tsc < 1 << 32:
            raise UsageError(f"--tick-ms {tick_ms:g}: a tick must be under {(1 << 32) // khz} ms of TSC")
        ticks = max(1, round(seconds * 1000 / tick_ms)) if tick_ms else int(seconds * 5000)
        machine.set_params(guest, FIRST=FIRST_PAGE, COUNT=machine.ram_size // PAGE - FIRST_PAGE,
                           PER_TICK=per_tick, RANDOM=1, TICKS=ticks, TICK_TSC=tick_tsc)
    return spec.name


def guest_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(per_tick=args.per_tick, tick_ms=args.tick_ms, seconds=args.seconds)


def _uri(transport: str, directory: str) -> str:
    if transport == "unix":
        return f"unix:{directory}/migrate.sock"
    with socket.socket() as probe:  # a free port on loopback for the destination to bind
        probe.bind(("127.0.0.1", 0))
        return f"tcp:127.0.0.1:{probe.getsockname()[1]}"


def run(args: argparse.Namespace) -> int:
    from ..machine import Machine
    from ..migration import MigrationError, migrate

    with tempfile.TemporaryDirectory(prefix="kvmshim-migrate-") as directory:
        uri = _uri(args.transport, directory)
        destination = subprocess.Popen(
            [sys.executable, "-m", "kvmshim.cli", "run", args.guest, "-m", str(args.ram), "--incoming", uri],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        source_output = bytearray()
        try:  # the destination must not outlive a failure here (kvmshim.cli reports it)
            with Machine(args.ram, on_output=source_output.extend) as machine:
                guest = load_guest(machine, args.guest, **guest_options(args))
                print(f"kvmshim migrate: {guest}, {format_size(args.ram)} of RAM, to {uri}, downtime target "
                      f"{args.downtime_ms:g} ms" + (f", {args.bandwidth:g} MB/s" if args.bandwidth else ""),
                      flush=True)
                print(f"{'round':>5} {'pages':>8} {'zero':>7} {'MiB sent':>9} {'dirty pages/s':>14} {'ms':>8} "
                      f"{'throttle':>8}", flush=True)
                thread = machine.start()
                time.sleep(args.after / 1000)
                try:
                    stats = migrate(machine, uri, downtime_ms=args.downtime_ms,
                                    bandwidth=args.bandwidth * 1e6 if args.bandwidth else None,
                                    max_rounds=args.max_rounds, auto_converge=args.auto_converge, verify=True,
                                    on_round=_print_round)
                except MigrationError as err:  # the source sees a broken link; the destination knows why
                    raise MigrationError(f"{err}{_destination_error(destination)}") from err
                thread.join()
            out, _ = destination.communicate(timeout=DESTINATION_TIMEOUT)
        finally:
            if destination.poll() is None:
                destination.kill()
                destination.communicate()
    status = destination.returncode
    _summary(args, stats, status, bytes(source_output), out)
    if args.png is not None:
        draw(args.png, stats, f"{guest}, {format_size(args.ram)} of RAM, downtime {stats.downtime_ms:.1f} ms")
        print(f"rounds drawn in {args.png}")
    if args.json:
        print(json.dumps(report(stats, status)))
    return 0 if stats.verified and status == 0 else 1


def _destination_error(destination: subprocess.Popen[str]) -> str:
    """What the destination wrote to stderr (its `kvmshim: error:` line) once it has ended, as lines
    to add to the source's error; it is killed if it has not ended within DESTINATION_ERROR_WAIT s."""
    try:
        _, err = destination.communicate(timeout=DESTINATION_ERROR_WAIT)
    except subprocess.TimeoutExpired:
        destination.kill()
        _, err = destination.communicate()
    return "".join(f"\ndestination: {line}" for line in err.splitlines() if line.strip())


def _print_round(r: RoundStats) -> None:
    label = "stop" if r.final else str(r.index)
    throttle = f"{r.throttle}%" if not r.final else "-"
    print(f"{label:>5} {r.pages:8d} {r.zero_pages:7d} {r.bytes / MiB:9.1f} {r.dirty_rate:14.0f} {r.ms:8.1f} "
          f"{throttle:>8}", flush=True)


def _summary(args: argparse.Namespace, stats: MigrationStats, status: int | None, source_output: bytes,
             destination_output: str) -> None:
    ratio = stats.bytes_sent / stats.ram_bytes
    print(f"downtime {stats.downtime_ms:.1f} ms, total {stats.total_ms:.0f} ms, {format_size(stats.bytes_sent)} sent "
          f"({ratio:.2f}x RAM), link {stats.link_rate / MiB:.0f} MiB/s, "
          + ("converged" if stats.converged else f"round limit {args.max_rounds} reached"))
    if stats.verified:
        print(f"verified: every RAM page on the destination equals the source's at the stop "
              f"({stats.ram_bytes // PAGE} pages)")
    else:
        print(f"NOT verified: {stats.mismatched_pages} pages differ" if stats.verified is False
              else f"not verified: {stats.verify_error}")
    if source_output:
        print(f"the guest ended on the source: {source_output.decode(errors='replace').strip()}")
    for line in destination_output.splitlines():
        print(f"destination: {line}")
    print(f"guest exit status on the destination: {status}")


def report(stats: MigrationStats, status: int | None) -> dict[str, Any]:
    return {**stats.to_dict(), "guest_exit_status": status}


def draw(path: Path, stats: MigrationStats, title: str) -> None:
    from ..plots import bar_chart

    labels = ["stop" if r.final else str(r.index) for r in stats.rounds]
    bar_chart(path, labels, {"pages sent": [r.pages for r in stats.rounds],
                             "of them zero pages": [r.zero_pages for r in stats.rounds]},
              bar_unit="pages", lines={"dirty rate before the round": [r.dirty_rate if r.index else float("nan")
                                                                       for r in stats.rounds]},
              line_unit="pages dirtied per second", x_label="pre-copy round (stop: vCPUs stopped)",
              title=f"Live migration: {title}")
