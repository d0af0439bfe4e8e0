"""Live migration between two machines in this process, on real /dev/kvm, with the guest running.

The guest is mostly sweeper-check, which rewrites random pages all along and at the end checks its
own memory against a sum it keeps in a register: "exits 0 on the destination" means that every
page and the vCPU state arrived. The link is cut at 20 points of the stream by a relay that reads
the sections it forwards; each time the source must run on as if nothing had happened, and the
destination must name where the stream broke. Then the same two machines migrate for real.
"""
from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvmshim import BareMachine, Machine
from kvmshim.commands.migrate import FIRST_PAGE, load_guest
from kvmshim.migration import (
    ConfigMismatch,
    LinkError,
    Listener,
    MigrationError,
    TruncatedStream,
    UnknownSection,
    incoming,
    migrate,
    resume,
)
from kvmshim.migration.stream import Kind
from kvmshim.tick import TICK_PORT, TickPort
from test_dirty_log import MODES

pytestmark = pytest.mark.kvm
RAM = 16 << 20
PAGE = 4096


# ---------------------------------------------------------------- helpers
def sweeper_check(m: Machine, seconds: float = 2.0, per_tick: int = 16, tick_ms: float = 1.0) -> None:
    load_guest(m, per_tick=per_tick, tick_ms=tick_ms, seconds=seconds)


def receive(pool: ThreadPoolExecutor, machine, listener: Listener, **options):
    """incoming() in a thread of ``pool``: its future."""
    return pool.submit(incoming, machine, listener, timeout=30, **options)


def migrate_between(pool: ThreadPoolExecutor, src, dst, listener: Listener, **options):
    """(source's, destination's stats) of a migration that must succeed; a failure names both ends."""
    arrived = receive(pool, dst, listener)
    try:
        stats = migrate(src, listener.uri, **options)
    except MigrationError as err:
        try:
            arrived.result(30)
        except MigrationError as refused:
            raise AssertionError(f"the source: {err}\nthe destination: {refused}") from refused
        raise
    return stats, arrived.result(30)


def finish(machine, stats, timeout: float = 60) -> None:
    """Resume what ran on the source and wait for the guest's end."""
    for thread in resume(machine, stats):
        thread.join(timeout)


def ticking(m: Machine, ticks: int, on_tick: Callable[[int], None] | None = None) -> TickPort:
    """The sweeper, one page per tick in order (page FIRST+i gets tick i+1), ``ticks`` ticks of ~1 ms."""
    def tick() -> int:
        if port.ticks > ticks:
            return 0
        if on_tick is not None:
            on_tick(port.ticks)
        time.sleep(0.001)
        return port.ticks

    port = TickPort(tick)
    m.io.add_subregion(TICK_PORT, port.region)
    m.load("sweeper")
    m.set_params("sweeper", SCREEN=0, FIRST=FIRST_PAGE, COUNT=ticks + 16, PER_TICK=1, PATTERN=0, STRIDE=1)
    return port


def dwords(m: Machine, first_page: int, count: int) -> list[int]:
    return [int.from_bytes(m.ram.ram_block.read((first_page + i) * PAGE, 4), "little") for i in range(count)]


def sections_of(data: bytes) -> list[tuple[Kind, str, int, int, int]]:
    """(kind, name, start, payload start, end) of each section of a stream."""
    found, at = [], 12
    while at + 2 <= len(data):
        kind, length = data[at], data[at + 1]
        name = data[at + 2:at + 2 + length].decode()
        (size,) = struct.unpack_from(">I", data, at + 2 + length)
        payload = at + 6 + length
        found.append((Kind(kind), name, at, payload, payload + size + 4))
        at = payload + size + 4
    return found


class CutLink:
    """A relay from ``uri`` to the destination at ``target`` (both unix sockets) that cuts the link
    at the byte ``where(sections)`` says, given the sections whose headers it has seen so far
    (None: not yet); with ``reply`` it forwards the whole stream and cuts the destination's answer."""

    def __init__(self, directory: Path, target: str, where: Callable[[list], int | None] = lambda s: None,
                 reply: bool = False) -> None:
        self.where, self.reply, self.target = where, reply, target.removeprefix("unix:")
        self.path = str(directory / "relay.sock")
        self.server = socket.socket(socket.AF_UNIX)
        Path(self.path).unlink(missing_ok=True)
        self.server.bind(self.path)
        self.server.listen(1)
        self.uri = f"unix:{self.path}"
        self.cut_at: int | None = None
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        source, _ = self.server.accept()
        destination = socket.socket(socket.AF_UNIX)
        destination.connect(self.target)
        answer = threading.Thread(target=self._answer, args=(destination, source), daemon=True)
        answer.start()
        seen, forwarded, sections = bytearray(), 0, []
        try:
            while (chunk := source.recv(1 << 16)):
                seen += chunk
                held = self._parse(seen, sections)
                self.cut_at = self.cut_at if self.cut_at is not None else self.where(sections)
                stop = min(held, self.cut_at if self.cut_at is not None else held)
                if stop > forwarded:
                    destination.sendall(seen[forwarded:stop])
                    forwarded = stop
                if self.cut_at is not None and forwarded >= self.cut_at:
                    break
        finally:
            for end in (source, destination):
                end.shutdown(socket.SHUT_RDWR)
                end.close()
            self.server.close()

    def _answer(self, destination: socket.socket, source: socket.socket) -> None:
        try:
            while (chunk := destination.recv(1 << 16)):
                if self.reply:
                    break
                source.sendall(chunk)
        except OSError:
            return
        for end in (source, destination):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _parse(data: bytearray, sections: list) -> int:
        """Add the sections whose headers are complete; returns how many bytes may go on (a header
        is held back until it is whole, so a cut before it can still be made)."""
        at = sections[-1][4] if sections else 12
        while at + 2 <= len(data) and at + 6 + data[at + 1] <= len(data):
            length = data[at + 1]
            (size,) = struct.unpack_from(">I", data, at + 2 + length)
            payload = at + 6 + length
            sections.append((Kind(data[at]), data[at + 2:at + 2 + length].decode(), at, payload, payload + size + 4))
            at = payload + size + 4
        return min(len(data), at) if len(data) >= 12 else 0


def nth(kind: Kind, n: int = 0, name: str | None = None):
    def pick(sections):
        matching = [s for s in sections if s[0] == kind and (name is None or s[1] == name)]
        return matching[n] if len(matching) > n else None
    return pick


def inside(pick, into: int = 3):
    return lambda sections: (s := pick(sections)) and min(s[3] + into, s[4] - 1)


def after(pick):
    return lambda sections: (s := pick(sections)) and s[4]


def before(pick):
    return lambda sections: (s := pick(sections)) and s[2]


def last_round(sections):
    rounds = [s for s in sections if s[0] == Kind.ROUND]
    return rounds[-1] if rounds and any(s[0] == Kind.VM for s in sections) else None


def first_ram_after_round0(sections):
    rounds = [s for s in sections if s[0] == Kind.ROUND]
    later = [s for s in sections if s[0] == Kind.RAM and rounds and s[2] > rounds[0][2]]
    return later[0] if later else None


#: (name, where the relay cuts, the section the destination names: None for a cut between sections
#: that the reader reports by the one before, or a LinkError).
CUTS = [
    ("in the header", lambda s: 3, None),
    ("after the header", lambda s: 12, None),
    ("in CONFIG's header", lambda s: (c := nth(Kind.CONFIG)(s)) and c[2] + 1, None),
    ("in CONFIG", inside(nth(Kind.CONFIG)), "config"),
    ("in CONFIG's CRC", lambda s: (c := nth(Kind.CONFIG)(s)) and c[4] - 1, "config"),
    ("after CONFIG", after(nth(Kind.CONFIG)), "config"),
    ("in the first RAM section of RAM", inside(nth(Kind.RAM, name="ram")), "ram"),
    ("in the tenth RAM section", inside(nth(Kind.RAM, 9), 5000), "ram"),
    ("before ROUND 0", before(nth(Kind.ROUND)), "ram"),
    ("after ROUND 0", after(nth(Kind.ROUND)), "round"),
    ("in a RAM section after round 0", inside(first_ram_after_round0, 100), "ram"),
    ("after the last round", after(last_round), "round"),
    ("in VM", inside(nth(Kind.VM)), "vm"),
    ("after VM", after(nth(Kind.VM)), "vm"),
    ("in the vCPU", inside(nth(Kind.CPU), 200), "cpu/0"),
    ("in the first device", inside(nth(Kind.DEVICE)), "kvmshim-debug-exit/0"),
    ("in the last device", inside(nth(Kind.DEVICE, name="kvmshim-ucall/0")), "kvmshim-ucall/0"),
    ("before END", before(nth(Kind.END)), "kvmshim-ucall/0"),
    ("in END", inside(nth(Kind.END), 0), "end"),
]


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("scheme", ["unix", "tcp"])
def test_a_running_guest_moves_whole_to_another_machine(tmp_path, scheme):
    out = bytearray()
    with Machine(RAM) as src, Machine(RAM, on_output=out.extend) as dst, ThreadPoolExecutor(1) as pool:
        sweeper_check(src)
        sweeper_check(dst)  # as `kvmshim run GUEST --incoming URI` does: the stream overwrites it all
        with Listener(f"unix:{tmp_path}/m.sock" if scheme == "unix" else "tcp:127.0.0.1:0") as listener:
            thread = src.start()
            time.sleep(0.3)
            stats, got = migrate_between(pool, src, dst, listener, verify=True)
        assert thread.join(10).reason == "stopped" and not src.serial.output  # it had not finished on the source
        assert src.memory_system.global_dirty_tracking == 0
        assert stats.verified and got.verified and stats.mismatched_pages == 0
        assert stats.rounds[0].pages == RAM // PAGE + 1 and stats.rounds[-1].final  # all RAM and the test ROM
        assert sum(r.dirty_pages for r in stats.rounds[1:]) > 0, "the guest dirtied no page meanwhile"
        assert got.running == [True] and got.pages == stats.pages_sent
        finish(dst, got)
        assert dst.exit_status == 0 and out == b"sweeper-check: ok\n"


@pytest.mark.parametrize("mode", ["get", "ring"])
def test_the_other_dirty_log_modes_lose_no_page_either(tmp_path, mode):
    """Plain KVM_GET_DIRTY_LOG and the dirty ring (GET + CLEAR is the default, above)."""
    with Machine(RAM, **MODES[mode]) as src, Machine(RAM) as dst, ThreadPoolExecutor(1) as pool:
        sweeper_check(src, per_tick=64)
        sweeper_check(dst)
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            src.start()
            time.sleep(0.3)
            stats, got = migrate_between(pool, src, dst, listener, verify=True, downtime_ms=5)
        assert stats.verified and len(stats.rounds) >= 3
        finish(dst, got)
        assert dst.exit_status == 0


def test_a_guest_migrated_into_a_file_resumes_from_it(tmp_path):
    out = bytearray()
    with Machine(RAM) as src, Machine(RAM, on_output=out.extend) as dst:
        sweeper_check(src)
        sweeper_check(dst)
        thread = src.start()
        time.sleep(0.3)
        stats = migrate(src, f"file:{tmp_path}/guest.mig")
        assert thread.join(10).reason == "stopped" and stats.verified is None  # a file cannot answer
        assert [p.name for p in tmp_path.iterdir()] == ["guest.mig"]  # no partial file left
        finish(dst, incoming(dst, f"file:{tmp_path}/guest.mig"))
        assert dst.exit_status == 0 and out == b"sweeper-check: ok\n"


def test_stop_and_copy_completes_the_exit_in_progress(tmp_path):
    """One round, then the stop, while the guest waits on its tick port read (a 1 ms handler): the
    destination must go on with the next tick, neither repeating the read nor losing it."""
    ticks = 400
    with Machine(RAM) as src, Machine(RAM) as dst, ThreadPoolExecutor(1) as pool:
        source_port, port = ticking(src, ticks), ticking(dst, ticks)
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            src.start()
            time.sleep(0.1)
            stats, got = migrate_between(pool, src, dst, listener, max_rounds=1, verify=True)
        assert [r.final for r in stats.rounds] == [False, True] and stats.verified
        assert 0 < source_port.ticks == port.ticks < ticks  # the tick port's count travelled too
        finish(dst, got)
        assert dst.exit_status == 0 and port.ticks == ticks + 1
        assert dwords(dst, FIRST_PAGE, ticks) == list(range(1, ticks + 1))


def test_pages_a_device_writes_through_the_address_space_migrate(tmp_path):
    """The tick port's handler writes a page of another range through ``memory`` on each tick, as a
    DMA-capable device would; KVM never sees those writes, memapi marks them for MIGRATION."""
    dma_first, dma_pages = 0x80, 64
    with Machine(RAM) as src, Machine(RAM) as dst, ThreadPoolExecutor(1) as pool:
        def dma(tick: int) -> None:
            src.memory.write((dma_first + tick % dma_pages) * PAGE, tick.to_bytes(4, "little") * 4)

        ticking(src, 600, dma)
        ticking(dst, 600)
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            src.start()
            time.sleep(0.2)
            stats, _ = migrate_between(pool, src, dst, listener, verify=True)
        written = dwords(src, dma_first, dma_pages)
        assert stats.verified and dwords(dst, dma_first, dma_pages) == written and max(written) > dma_pages


def test_a_link_cut_anywhere_leaves_the_source_running(tmp_path):
    """20 cuts while the guest runs, then a migration that gets through: the guest, which ran on
    through all of them on the source, ends on the destination with its memory intact."""
    out = bytearray()
    with Machine(RAM) as src, Machine(RAM, on_output=out.extend) as dst, ThreadPoolExecutor(1) as pool:
        sweeper_check(src, seconds=8)
        sweeper_check(dst, seconds=8)
        thread = src.start()
        cuts = []
        for name, where, section in CUTS + [("before LOADED", None, None)]:
            with Listener(f"unix:{tmp_path}/m.sock") as listener:
                relay = CutLink(tmp_path, listener.uri, where or (lambda s: None), reply=where is None)
                arrived = receive(pool, dst, listener)
                with pytest.raises(MigrationError):
                    migrate(src, relay.uri, timeout=5)
                with pytest.raises(MigrationError) as refused:
                    arrived.result(30)
                relay.thread.join(10)
            assert thread.is_alive() and src.runner.running, f"cut {name}: the source stopped"
            assert src.memory_system.global_dirty_tracking == 0, f"cut {name}: dirty tracking left on"
            error = refused.value
            if where is None:
                assert isinstance(error, LinkError) and "did not commit" in str(error), name
            elif section is not None:
                assert isinstance(error, TruncatedStream) and error.section == section, (name, error)
            cuts.append(name)
        assert len(cuts) == 20 and not src.serial.output
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            stats, got = migrate_between(pool, src, dst, listener, verify=True)
        assert stats.verified and thread.join(10).reason == "stopped"
        finish(dst, got)
        assert dst.exit_status == 0 and out == b"sweeper-check: ok\n"


@pytest.mark.parametrize("make, phrase", [
    (lambda: Machine(2 * RAM), "RAM region 'ram': 0x1000000 bytes on the source, 0x2000000 bytes here"),
    (lambda: BareMachine(RAM), "the source has machine 'machine', this destination 'bare-machine'"),
    (lambda: Machine(RAM, vcpus=2), "the source has vcpus 1, this destination 2"),
    (lambda: _with_tick_port(Machine(RAM)), "device 'kvmshim-tick/0' is not in the stream"),
], ids=["RAM size", "machine kind", "vCPUs", "extra device"])
def test_a_destination_of_another_shape_refuses_before_touching_anything(tmp_path, make, phrase):
    with Machine(RAM) as src, make() as dst, ThreadPoolExecutor(1) as pool:
        sweeper_check(src)
        marker = b"untouched" * 400
        dst.ram.ram_block.write(0x200000, marker)
        regs = dst.vcpu.registers()
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            arrived = receive(pool, dst, listener)
            thread = src.start()
            with pytest.raises(MigrationError):
                migrate(src, listener.uri)
            with pytest.raises(ConfigMismatch, match=phrase):
                arrived.result(30)
        assert thread.is_alive() and src.memory_system.global_dirty_tracking == 0
        assert dst.ram.ram_block.read(0x200000, len(marker)) == marker and dst.vcpu.registers() == regs
        thread.stop()


def _with_tick_port(m: Machine) -> Machine:
    m.io.add_subregion(TICK_PORT, TickPort(lambda: 0).region)
    return m


def test_a_device_the_destination_lacks_is_an_unknown_section(tmp_path):
    with Machine(RAM) as src, Machine(RAM) as dst:
        _with_tick_port(src)
        src.load("hello")
        migrate(src, f"file:{tmp_path}/s")
        with pytest.raises(UnknownSection, match="device section 'kvmshim-tick/0': this destination has no such"):
            incoming(dst, f"file:{tmp_path}/s")


def test_only_the_vcpus_that_ran_are_resumed(tmp_path):
    out = bytearray()
    with Machine(RAM, vcpus=2) as src, Machine(RAM, vcpus=2, on_output=out.extend) as dst:
        sweeper_check(src, seconds=1)
        sweeper_check(dst, seconds=1)
        src.start(0)
        time.sleep(0.2)
        migrate(src, f"file:{tmp_path}/s")
        got = incoming(dst, f"file:{tmp_path}/s")
        assert got.running == [True, False]
        finish(dst, got)
        assert out == b"sweeper-check: ok\n" and not dst.runners[1].running


def test_auto_converge_throttles_a_guest_that_outruns_the_link(tmp_path):
    """A guest as fast as the vCPU goes against a 30 MB/s link: the rounds never get small enough, so
    after two rounds that dirtied more than half of what they sent the vCPUs are throttled, harder
    each time; the round limit ends pre-copy and the guest still arrives whole."""
    with Machine(RAM) as src, Machine(RAM) as dst, ThreadPoolExecutor(1) as pool:
        sweeper_check(src, seconds=20, per_tick=64, tick_ms=0)
        sweeper_check(dst, seconds=20, per_tick=64, tick_ms=0)
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            src.start()
            time.sleep(0.2)
            stats, _ = migrate_between(pool, src, dst, listener, bandwidth=30e6, downtime_ms=1, max_rounds=6,
                                       verify=True)
        throttles = [r.throttle for r in stats.rounds]
        assert stats.verified and not stats.converged and len(stats.rounds) == 7
        assert throttles[:3] == [0, 0, 0] and throttles[-2] > 20 and throttles == sorted(throttles[:-1]) + [0]


def test_machine_migrate_and_incoming_are_the_package_functions(tmp_path):
    """Machine.migrate / Machine.incoming, the API the issue names, over a file."""
    path = tmp_path / "stream"
    with Machine(ram_size=1 << 20) as src:
        src.load("hello")
        stats = src.migrate(f"file:{path}")
    assert stats.ram_bytes and path.exists()
    with Machine(ram_size=1 << 20) as dst:
        dst.incoming(f"file:{path}")
        assert dst.run(timeout=30).reason == "stopped" and dst.serial.output == b"Hello from kvmshim guest!\n"


def test_a_stale_socket_that_cannot_be_removed_leaks_nothing(tmp_path, monkeypatch):
    """The stale socket of an earlier run is removed before the new one is made: if that fails, the
    error is a LinkError naming the URI and no socket is left open."""
    path = tmp_path / "m.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()

    def refuse(target):
        raise PermissionError(1, "Operation not permitted", str(target))

    monkeypatch.setattr("kvmshim.migration.transport.os.unlink", refuse)
    before = len(list(Path("/proc/self/fd").iterdir()))
    with pytest.raises(LinkError, match=f"unix:{path}: cannot listen: Operation not permitted") as error:
        Listener(f"unix:{path}")
    assert len(list(Path("/proc/self/fd").iterdir())) == before, error.value  # the traceback holds its frames
    monkeypatch.undo()
    with Listener(f"unix:{path}") as listener:  # removable again: it is replaced
        assert listener.sock is not None
    assert not path.exists()
