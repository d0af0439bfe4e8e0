"""`kvmshim snapshot save FILE [GUEST] [--diff DIFF]` and `kvmshim snapshot restore FILE [DIFF...]`.

``save`` boots the guest (default sweeper-check), lets it run ``--after`` ms, and writes a full
snapshot with the vCPUs held; with ``--diff`` it lets the guest run ``--diff-after`` ms more and
writes a diff snapshot of only the pages dirtied since, then stops. ``restore`` builds the machine
the snapshot records (guest and RAM size), loads the snapshot and its diffs in order, and runs the
guest on to its end: the exit status is the guest's (sweeper-check: 0 if its memory is intact).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import parse_size, positive
from .migrate import GUEST, add_sweeper_options, guest_options, load_guest

if TYPE_CHECKING:
    from ..migration import SnapshotStats
    from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("snapshot", help="save a running guest to a file (and diffs), or restore and resume it")
    action = p.add_subparsers(dest="action", required=True)
    save = action.add_parser("save", help="boot a guest, run it a while, write a snapshot (and a diff)")
    save.add_argument("file", type=Path)
    save.add_argument("guest", nargs="?", default=GUEST, help=f"the guest (default {GUEST})")
    save.add_argument("-m", "--ram", type=parse_size, default=parse_size("64M"), help="RAM size (default 64M)")
    save.add_argument("--after", type=positive(), default=500.0, metavar="MS", help="run this long first (500)")
    save.add_argument("--diff", type=Path, metavar="DIFF", help="then a diff snapshot to DIFF")
    save.add_argument("--diff-after", type=positive(), default=300.0, metavar="MS",
                      help="run this long between the snapshot and the diff (default 300)")
    save.add_argument("--json", action="store_true", help="one JSON object per snapshot")
    add_sweeper_options(save)
    restore = action.add_parser("restore", help="load a snapshot and its diffs, run the guest to its end")
    restore.add_argument("file", type=Path)
    restore.add_argument("diffs", type=Path, nargs="*", metavar="DIFF", help="diff snapshots, oldest first")
    restore.add_argument("--timeout", type=positive(), default=None, help="stop the guest after this many seconds")
    return p


def run(args: argparse.Namespace) -> int:
    return _save(args) if args.action == "save" else _restore(args)


def _save(args: argparse.Namespace) -> int:
    import guests

    from ..machine import Machine
    from ..migration import Snapshots

    with Machine(args.ram) as machine:
        load_guest(machine, args.guest, **guest_options(args))
        launch = {"guest": str(guests.resolve(args.guest)), "ram": args.ram}
        thread = machine.start()
        with Snapshots(machine, meta={"launch": launch}) as snapshots:
            time.sleep(args.after / 1000)
            _show(args, snapshots.save(args.file))
            if args.diff is not None:
                time.sleep(args.diff_after / 1000)
                _show(args, snapshots.save(args.diff, diff=True))
        thread.stop()
    return 0


def _show(args: argparse.Namespace, stats: SnapshotStats) -> None:
    if args.json:
        print(json.dumps(stats.to_dict()), flush=True)
        return
    kind = f"diff of {stats.parent}" if stats.parent else "full"
    print(f"{stats.path}: {kind} snapshot {stats.id}, {stats.pages} pages ({stats.zero_pages} zero), "
          f"{stats.bytes} bytes, the guest held {stats.ms:.1f} ms", flush=True)


def _restore(args: argparse.Namespace) -> int:
    from ..machine import Machine, stdout_writer
    from ..migration import MigrationError, read_snapshot_config, restore, resume

    launch = read_snapshot_config(args.file).get("launch")
    if not isinstance(launch, dict) or not {"guest", "ram"} <= launch.keys():
        raise MigrationError(f"{args.file}: not made by `kvmshim snapshot save` (no guest recorded): build the "
                             "machine and call kvmshim.migration.restore")
    with Machine(launch["ram"], on_output=stdout_writer) as machine:
        machine.load(launch["guest"])
        stats = restore(machine, args.file, *args.diffs)
        for thread in resume(machine, stats, args.timeout):
            thread.join()
        return machine.exit_status
