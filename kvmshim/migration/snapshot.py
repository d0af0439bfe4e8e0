"""Snapshots to files: a full one, then diff snapshots of only the pages dirtied since the last
(Firecracker's diff snapshots), each one a migration stream with every vCPU and device state.

``Snapshots(machine).save(path)`` holds the vCPUs out of KVM_RUN for the save (a running guest
carries on afterwards) and leaves dirty tracking on, so that ``save(path, diff=True)`` writes the
pages dirtied since; meanwhile the MIGRATION client is theirs (a migration is MigrationBlocked),
and a diff whose tracking was stopped under it is refused. Every snapshot has an id and a diff
names its parent's: ``restore(machine, full, diff1, diff2)`` reads every CONFIG section first and
refuses a chain that does not link up, or a snapshot of another machine, before it loads anything.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memapi import GlobalDirty

from . import codec, cpu
from .errors import MigrationBlocked, MigrationError, StreamError
from .incoming import config_section, destination, load_stream, read_config
from .layout import MachineLayout
from .ram import RamSender, start_tracking, take_dirty, tracking
from .stats import IncomingStats
from .stream import Kind, StreamReader, StreamWriter
from .transport import Channel, Listener, connect

if TYPE_CHECKING:
    from ..base import MachineBase

PathLike = str | Path


@dataclass
class SnapshotStats:
    path: str
    id: str
    parent: str | None
    pages: int
    zero_pages: int
    bytes: int
    ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Snapshots:
    """Full and diff snapshots of one machine; ``close()`` (or ``with``) ends the dirty tracking
    that diff snapshots need. ``meta`` goes into every CONFIG section (the CLI records the guest)."""

    def __init__(self, machine: MachineBase, *, devices: Iterable[object] = (),
                 meta: dict[str, Any] | None = None) -> None:
        self.layout = MachineLayout(machine, devices)
        self.meta = meta or {}
        self.last: str | None = None
        self._tracking = False

    def save(self, path: PathLike, *, diff: bool = False) -> SnapshotStats:
        """Write a snapshot (with ``diff``, only the pages dirtied since the previous one); the file
        appears only once it is complete."""
        if diff and self.last is None:
            raise MigrationError("a diff snapshot needs a full snapshot first")
        began, snapshot_id = time.monotonic(), uuid.uuid4().hex
        parent = self.last if diff else None
        try:
            stats = self._write(path, snapshot_id, parent)
        except BaseException:
            self.last = None  # the dirty bits taken are gone with the file: the next one must be full
            raise
        self.last = snapshot_id
        stats.ms = (time.monotonic() - began) * 1000
        return stats

    def _write(self, path: PathLike, snapshot_id: str, parent: str | None) -> SnapshotStats:
        machine, system = self.layout.machine, self.layout.machine.memory_system
        with connect(f"file:{path}") as channel, machine.paused():
            running = cpu.settle(machine.runners)
            system.flush_coalesced()
            self._track(parent)
            dirty = {mr: take_dirty(mr) for mr in self.layout.regions}
            writer = StreamWriter(channel)
            writer.header()
            config = self.layout.config(snapshot={"id": snapshot_id, "parent": parent}, **self.meta)
            writer.section(Kind.CONFIG, "config", codec.encode(config))
            sender = RamSender(writer)
            sender.send(dict.fromkeys(dirty) if parent is None else dirty)
            self.layout.write_state(writer, running)
            writer.section(Kind.END, "end")
            writer.flush()
            channel.commit()
        return SnapshotStats(str(path), snapshot_id, parent, sender.pages, sender.zero_pages, writer.bytes_written, 0.0)

    def _track(self, parent: str | None) -> None:
        """A full snapshot starts dirty tracking unless it is on; a diff needs it on since ``parent``,
        or the pages dirtied while it was off would be missing."""
        system = self.layout.machine.memory_system
        if self._tracking and not tracking(system):
            self._tracking = False  # stopped under us: global_dirty_log_stop(MIGRATION) by someone else
        if parent is not None and not self._tracking:
            raise MigrationBlocked(f"a diff of snapshot {parent}: dirty tracking has stopped since (close(), or "
                                   "someone stopped the MIGRATION client), so pages would be missing: take a "
                                   "full snapshot")
        if not self._tracking:
            start_tracking(system, "a snapshot")
            self._tracking = True

    def close(self) -> None:
        """End the dirty tracking (if it is still on); the next save must be a full one."""
        system = self.layout.machine.memory_system
        if self._tracking and tracking(system):
            system.global_dirty_log_stop(GlobalDirty.MIGRATION)
        self._tracking = False

    def __enter__(self) -> Snapshots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_snapshot_config(path: PathLike) -> dict[str, Any]:
    """A snapshot's CONFIG section, unchecked (what machine to build for it)."""
    with Listener(f"file:{path}").accept() as channel:
        config = config_section(StreamReader(channel), f"{path}: ")
    if not isinstance(config, dict):
        raise StreamError(f"{path}: the CONFIG section is not a dict", "config")
    return config


def restore(machine: MachineBase, *paths: PathLike, devices: Iterable[object] = ()) -> IncomingStats:
    """Load a full snapshot and the diffs that follow it, in order, into a machine whose vCPUs are
    stopped; the last one's vCPU and device state wins. Returns the last one's figures. Every file
    is opened and its CONFIG read and checked once, before the first is loaded."""
    if not paths:
        raise ValueError("restore: no snapshot given")
    layout = destination(machine, devices)
    with ExitStack() as files:
        opened = [_chain_config(layout, path, files.enter_context(Listener(f"file:{path}").accept()))
                  for path in paths]
        for index, (_, config) in enumerate(opened):
            expected = opened[index - 1][1]["snapshot"]["id"] if index else None
            if config["snapshot"]["parent"] != expected:
                what = "a full snapshot" if expected is None else f"a diff of snapshot {expected}"
                raise MigrationError(f"{paths[index]}: snapshot {config['snapshot']['id']} is not {what} "
                                     f"(its parent is {config['snapshot']['parent']})")
        return [load_stream(layout, reader, reader.channel.uri, config) for reader, config in opened][-1]


def _chain_config(layout: MachineLayout, path: PathLike, channel: Channel) -> tuple[StreamReader, dict[str, Any]]:
    """A snapshot's reader, past its CONFIG section (checked against ``layout``), and that section."""
    reader = StreamReader(channel)
    config = read_config(reader, layout)
    snapshot = config.get("snapshot")
    if not isinstance(snapshot, dict) or not {"id", "parent"} <= snapshot.keys():
        raise StreamError(f"{path}: a migration stream, not a snapshot (its CONFIG has no snapshot id)", "config")
    return reader, config
