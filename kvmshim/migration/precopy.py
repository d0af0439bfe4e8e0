"""Pre-copy live migration (QEMU's migration/ram.c algorithm), the source's side.

Round 0 sends every page with global dirty tracking (the MIGRATION client) on, which must not be
on already (diff snapshots use it too, and it is a flag, not a count); each next round takes the
pages dirtied meanwhile (KVM's dirty log through memapi, and writes devices made through an
AddressSpace) and sends them. Once the pages left would go in ``downtime_ms`` at the rate the
link has shown, or after ``max_rounds``, the vCPUs are held out of KVM_RUN, their last exits
completed, the last dirty pages sent, then the VM, vCPU and device state and END. The destination
answers LOADED; the source sends COMMIT and stops its vCPUs for good. Until COMMIT has gone,
any failure (a cut link, a destination that refuses) releases the vCPUs and stops dirty tracking:
the guest runs on where it was, as if nothing had happened.

Auto-converge, as QEMU's cpu-throttle: when the guest dirtied more than half as many bytes as a
round sent, twice, the vCPUs are held out of KVM_RUN for 20% of every 10 ms, then 10% more each
time, up to 99%.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from memapi import PAGE_SIZE, GlobalDirty, MemoryRegion

from . import codec, cpu
from .errors import LinkError, MigrationError, StreamError
from .layout import MachineLayout
from .ram import RamSender, page_digests, pages_of, start_tracking, take_dirty
from .stats import MigrationStats, RoundStats
from .stream import Kind, StreamReader, StreamWriter
from .transport import Channel, connect

if TYPE_CHECKING:
    from ..base import MachineBase

THROTTLE_SLICE = 0.010
THROTTLE_INITIAL, THROTTLE_INCREMENT, THROTTLE_MAX = 20, 10, 99
#: A round dirtying more than this share of the bytes it sent counts towards throttling.
THROTTLE_TRIGGER = 0.5

Dirty = dict[MemoryRegion, list[int]]


def migrate(machine: MachineBase, uri: str, *, downtime_ms: float = 50, bandwidth: float | None = None,
            max_rounds: int = 30, auto_converge: bool = True, verify: bool = False, devices: Iterable[object] = (),
            on_round: Callable[[RoundStats], None] | None = None, timeout: float = 10.0,
            meta: dict[str, Any] | None = None) -> MigrationStats:
    """Move the running guest of ``machine`` to the destination at ``uri``; returns once it has moved,
    with the source's vCPUs stopped (their threads end with outcome "stopped").

    ``bandwidth`` caps the link in bytes/s; ``verify`` has the destination compare every RAM page
    with the source's at the stop (CRC-32s, after COMMIT: not part of the downtime); ``on_round``
    sees each round's figures as it ends; ``meta`` goes into the CONFIG section as it is. Raises
    MigrationError (LinkError, StreamError, ConfigMismatch...) with the source still running."""
    if not downtime_ms > 0 or (bandwidth is not None and not bandwidth > 0) or max_rounds < 1:
        raise ValueError(f"migrate: downtime_ms {downtime_ms!r} and bandwidth {bandwidth!r} must be positive, "
                         f"max_rounds {max_rounds!r} at least 1")
    layout = MachineLayout(machine, devices)
    return Precopy(layout, downtime_ms, auto_converge, max_rounds, on_round).run(
        uri, bandwidth, verify, timeout, meta or {})


class Precopy:
    """One outgoing migration: the rounds, the stop, the handshake."""

    def __init__(self, layout: MachineLayout, downtime_ms: float, auto_converge: bool, max_rounds: int,
                 on_round: Callable[[RoundStats], None] | None) -> None:
        self.layout = layout
        self.machine = layout.machine
        self.downtime_ms = downtime_ms
        self.max_rounds = max_rounds
        self.throttle = Throttle(self.machine) if auto_converge else None
        self.on_round = on_round
        self.send_seconds = 0.0
        self._synced = 0.0  # when the dirty bits were last taken

    def run(self, uri: str, bandwidth: float | None, verify: bool, timeout: float,
            meta: dict[str, Any]) -> MigrationStats:
        machine, system = self.machine, self.machine.memory_system
        started = time.monotonic()
        stats = MigrationStats(uri, self.layout.ram_bytes)
        start_tracking(system, f"migrate to {uri}")
        channel: Channel | None = None
        committed = inactive = False
        with ExitStack() as held:
            try:
                channel = connect(uri, timeout)
                writer = StreamWriter(channel, bandwidth)
                writer.header()
                writer.section(Kind.CONFIG, "config", codec.encode(self.layout.config(verify=verify, **meta)))
                left, rate = self._precopy(writer, stats)
                if self.throttle is not None:
                    self.throttle.stop()
                stopped = time.monotonic()
                held.enter_context(machine.paused())
                running = cpu.settle(machine.runners)
                system.flush_coalesced()
                machine.inactivate_storage()  # flushed and unlocked: the destination takes the disks over
                inactive = True
                stats.stop_ms = (time.monotonic() - stopped) * 1000
                self._final_round(writer, stats, left, rate, running)
                sent = time.monotonic()
                if channel.duplex:
                    _await_loaded(channel)
                else:
                    channel.commit()
                stats.load_wait_ms = (time.monotonic() - sent) * 1000
                stats.downtime_ms = (time.monotonic() - stopped) * 1000
                if channel.duplex:
                    writer.section(Kind.COMMIT, "commit")
                    writer.flush()
                machine.stop()  # held vCPUs return "stopped" instead of resuming
                committed = True
            finally:
                if self.throttle is not None:
                    self.throttle.stop()
                system.global_dirty_log_stop(GlobalDirty.MIGRATION)
                if channel is not None and not committed:
                    channel.close()
                if inactive and not committed:  # the source runs on: its disks are its own again
                    machine.activate_storage()
        stats.total_ms = (time.monotonic() - started) * 1000
        stats.bytes_sent = writer.bytes_written
        with channel:
            if verify and channel.duplex:
                self._verify(channel, writer, stats)
        return stats

    # ------------------------------------------------------------ rounds
    def _precopy(self, writer: StreamWriter, stats: MigrationStats) -> tuple[Dirty, float]:
        """Rounds until the rest fits the downtime target or the round limit; returns the rest and
        the dirty rate it was found at."""
        regions = self.layout.regions
        self._take_dirty()  # bits from before the start: round 0 sends everything anyway
        total = sum(pages_of(mr) for mr in regions)
        self._round(writer, stats, dict.fromkeys(regions), total, 0.0)
        high = 0
        while True:
            dirty, count, rate = self._take_dirty()
            stats.link_rate = writer.bytes_written / max(self.send_seconds, 1e-6)
            if count * PAGE_SIZE / stats.link_rate * 1000 <= self.downtime_ms:
                stats.converged = True
                return dirty, rate
            if len(stats.rounds) >= self.max_rounds:
                return dirty, rate
            sent = self._round(writer, stats, dirty, count, rate)
            if self.throttle is not None and count * PAGE_SIZE > THROTTLE_TRIGGER * sent.bytes:
                high += 1
                if high >= 2:
                    self.throttle.increase()
                    high = 0

    def _take_dirty(self) -> tuple[Dirty, int, float]:
        """Every region's dirty pages, how many, and how many per second since the last time."""
        now = time.monotonic()
        dirty = {mr: take_dirty(mr) for mr in self.layout.regions}
        count = sum(len(pages) for pages in dirty.values())
        rate, self._synced = count / max(now - self._synced, 1e-6), now
        return dirty, count, rate

    def _round(self, writer: StreamWriter, stats: MigrationStats, dirty: Mapping[MemoryRegion, list[int] | None],
               count: int, rate: float, final: bool = False) -> RoundStats:
        """Send ``dirty`` (None: every page of the region) and close the round with a ROUND section."""
        began, before = time.monotonic(), writer.bytes_written
        sender = RamSender(writer)
        sender.send(dirty)
        index = len(stats.rounds)
        writer.section(Kind.ROUND, "round", codec.encode({"index": index, "final": final}))
        writer.flush()
        seconds = time.monotonic() - began
        self.send_seconds += seconds
        result = RoundStats(index, sender.pages, sender.zero_pages, writer.bytes_written - before, count, rate,
                            seconds * 1000, self.throttle.percent if self.throttle and not final else 0, final)
        stats.rounds.append(result)
        if self.on_round is not None:
            self.on_round(result)
        return result

    def _final_round(self, writer: StreamWriter, stats: MigrationStats, left: Dirty, rate: float,
                     running: list[bool]) -> None:
        """With the vCPUs stopped: the pages left (found at ``rate``) and those dirtied since, then the
        state and END."""
        began, before = time.monotonic(), writer.bytes_written
        last = self._take_dirty()[0]
        dirty = {mr: sorted(set(pages) | set(last[mr])) for mr, pages in left.items()}
        final = self._round(writer, stats, dirty, sum(len(pages) for pages in dirty.values()), rate, final=True)
        self.layout.write_state(writer, running)
        writer.section(Kind.END, "end")
        writer.flush()
        final.bytes = writer.bytes_written - before
        final.ms = (time.monotonic() - began) * 1000

    def _verify(self, channel: Channel, writer: StreamWriter, stats: MigrationStats) -> None:
        """After COMMIT: every page's CRC-32 at the stop; the destination answers with its comparison.
        The guest has moved by then, so a failure here is reported in ``verify_error``, not raised."""
        began = time.monotonic()
        digests = {mr.name: page_digests(mr) for mr in self.layout.regions}
        try:
            writer.section(Kind.VERIFY, "verify", codec.encode(digests))
            writer.flush()
            result = codec.decode(StreamReader(channel).expect(Kind.RESULT).payload)
            stats.verified, stats.mismatched_pages = bool(result["verified"]), int(result["mismatched"])
        except (MigrationError, codec.CodecError, KeyError, TypeError) as err:
            stats.verify_error = str(err)
        stats.verify_ms = (time.monotonic() - began) * 1000


def _await_loaded(channel: Channel) -> None:
    try:
        StreamReader(channel).expect(Kind.LOADED)
    except StreamError as err:
        raise LinkError(f"{channel.uri}: the destination did not confirm it loaded the stream ({err})") from err


class Throttle:
    """Auto-converge: a thread that holds every vCPU out of KVM_RUN for ``percent`` of the time."""

    def __init__(self, machine: MachineBase) -> None:
        self.machine = machine
        self.percent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def increase(self) -> None:
        self.percent = min(THROTTLE_MAX, self.percent + THROTTLE_INCREMENT if self.percent else THROTTLE_INITIAL)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="migration-throttle", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(THROTTLE_SLICE):
            with self.machine.paused():
                time.sleep(THROTTLE_SLICE * self.percent / (100 - self.percent))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
