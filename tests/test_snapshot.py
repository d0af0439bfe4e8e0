"""Snapshots to files on real /dev/kvm: a full one and a diff of the pages dirtied since, taken while
the guest runs (held for the save only); restored, the guest ends as if it had never stopped."""
from __future__ import annotations

import time

import pytest

from kvmshim import Machine
from kvmshim.migration import LinkError, MigrationBlocked, MigrationError, Snapshots, StateError, migrate, restore
from memapi import GlobalDirty
from test_migration import FIRST_PAGE, RAM, dwords, finish, sweeper_check, ticking

pytestmark = pytest.mark.kvm


def test_a_full_and_a_diff_snapshot_of_a_running_guest(tmp_path):
    full, diff = tmp_path / "full.snap", tmp_path / "diff.snap"
    with Machine(RAM) as src:
        sweeper_check(src)
        thread = src.start()
        time.sleep(0.2)
        with Snapshots(src) as snapshots:
            first = snapshots.save(full)
            assert thread.is_alive() and src.runner.running  # held for the save, running again after it
            time.sleep(0.1)
            second = snapshots.save(diff, diff=True)
        thread.stop()
        assert src.memory_system.global_dirty_tracking == 0
    assert first.parent is None and second.parent == first.id
    assert first.pages == RAM // 4096 + 1 and 0 < second.pages < first.pages
    assert diff.stat().st_size < full.stat().st_size
    for chain in ((full, diff), (full,)):  # either one is a consistent guest
        out = bytearray()
        with Machine(RAM, on_output=out.extend) as dst:
            sweeper_check(dst)
            finish(dst, restore(dst, *chain))
            assert dst.exit_status == 0 and out == b"sweeper-check: ok\n", chain


def test_a_chain_that_does_not_link_up_is_refused_before_loading(tmp_path):
    paths = [tmp_path / f"{n}.snap" for n in ("a", "b", "c")]
    with Machine(RAM) as src:
        src.load("hello")
        with Snapshots(src) as snapshots:
            snapshots.save(paths[0])
            snapshots.save(paths[1], diff=True)
            snapshots.save(paths[2])
    with Machine(RAM) as dst:
        marker = b"untouched" * 100
        dst.ram.ram_block.write(0x100000, marker)
        with pytest.raises(MigrationError, match=r"b\.snap: snapshot [0-9a-f]+ is not a full snapshot"):
            restore(dst, paths[1])
        with pytest.raises(MigrationError, match=r"b\.snap: snapshot [0-9a-f]+ is not a diff of snapshot"):
            restore(dst, paths[2], paths[1])
        with pytest.raises(MigrationError, match="a migration stream, not a snapshot"):
            from kvmshim.migration import migrate
            src_path = tmp_path / "stream.mig"
            with Machine(RAM) as other:
                other.load("hello")
                migrate(other, f"file:{src_path}")
            restore(dst, src_path)
        assert dst.ram.ram_block.read(0x100000, len(marker)) == marker


def test_a_failed_save_keeps_the_old_file_and_the_next_must_be_full(tmp_path, monkeypatch):
    path = tmp_path / "guest.snap"
    with Machine(RAM) as src:
        src.load("hello")
        with Snapshots(src) as snapshots:
            snapshots.save(path)
            saved = path.read_bytes()

            def broken(*args):
                raise StateError("vm: the test broke it")

            monkeypatch.setattr("kvmshim.migration.cpu.save_vm", broken)
            with pytest.raises(StateError, match="the test broke it"):
                snapshots.save(path, diff=True)
            monkeypatch.undo()
            assert path.read_bytes() == saved and [p.name for p in tmp_path.iterdir()] == ["guest.snap"]
            with pytest.raises(MigrationError, match="a diff snapshot needs a full snapshot first"):
                snapshots.save(path, diff=True)
            with pytest.raises(LinkError, match="cannot write"):
                snapshots.save(tmp_path / "missing" / "guest.snap")


def test_a_guest_stopped_in_the_middle_of_an_in_resumes_it_once(tmp_path):
    """Stopped from another thread while its tick port read is in progress (a 1 ms handler), the
    guest is saved with that read completed: restored, it neither repeats nor loses a tick, and
    the source, started again, carries on just as well."""
    ticks = 300
    path = tmp_path / "guest.snap"
    with Machine(RAM) as src, Machine(RAM) as dst:
        ticking(src, ticks)
        port = ticking(dst, ticks)
        thread = src.start()
        time.sleep(0.1)
        thread.stop()
        with Snapshots(src) as snapshots:
            snapshots.save(path)
        got = restore(dst, path)
        assert got.running == [False]
        dst.start().join(30)
        src.start().join(30)
        for machine in (src, dst):
            assert machine.exit_status == 0 and dwords(machine, FIRST_PAGE, ticks) == list(range(1, ticks + 1))
        assert port.ticks == ticks + 1  # the count went on from the source's


def test_a_migration_is_blocked_while_diff_snapshots_track_the_dirty_pages(tmp_path):
    """MIGRATION dirty tracking is a flag, not a count: a migration between two saves (here one whose
    destination refuses the connection) would stop it and take the pages dirtied since the full
    snapshot, and the diff would silently miss them. It is refused before it connects, and the
    chain restores a guest whose memory is intact."""
    full, diff = tmp_path / "full.snap", tmp_path / "diff.snap"
    with Machine(RAM) as src:
        sweeper_check(src)
        thread = src.start()
        time.sleep(0.2)
        with Snapshots(src) as snapshots:
            snapshots.save(full)
            time.sleep(0.1)
            with pytest.raises(MigrationBlocked, match="dirty tracking for MIGRATION is already in use"):
                src.migrate(f"unix:{tmp_path}/nobody.sock", timeout=1)
            assert thread.is_alive() and src.memory_system.global_dirty_tracking == GlobalDirty.MIGRATION
            time.sleep(0.1)
            snapshots.save(diff, diff=True)
        thread.stop()
    out = bytearray()
    with Machine(RAM, on_output=out.extend) as dst:
        sweeper_check(dst)
        finish(dst, restore(dst, full, diff))
        assert dst.exit_status == 0 and out == b"sweeper-check: ok\n"


def test_snapshots_and_migrations_refuse_a_migration_client_already_on(tmp_path):
    """Someone else's MIGRATION tracking: neither a snapshot nor a migration takes its dirty bits or
    stops it; nothing is written."""
    with Machine(RAM) as src:
        src.load("hello")
        system = src.memory_system
        assert system.global_dirty_log_start(GlobalDirty.MIGRATION)
        with pytest.raises(MigrationBlocked, match="dirty tracking for MIGRATION is already in use"):
            Snapshots(src).save(tmp_path / "guest.snap")
        with pytest.raises(MigrationBlocked, match="dirty tracking for MIGRATION is already in use"):
            migrate(src, f"file:{tmp_path}/guest.mig")
        assert system.global_dirty_tracking == GlobalDirty.MIGRATION and not list(tmp_path.iterdir())
        system.global_dirty_log_stop(GlobalDirty.MIGRATION)


def test_a_diff_after_its_dirty_tracking_was_lost_is_refused(tmp_path):
    """Tracking stopped under the snapshots (or ended by close()): a diff would miss every page dirtied
    meanwhile, so it is refused, nothing is written, and the next full snapshot starts over."""
    with Machine(RAM) as src:
        src.load("hello")
        system = src.memory_system
        with Snapshots(src) as snapshots:
            snapshots.save(tmp_path / "full.snap")
            system.global_dirty_log_stop(GlobalDirty.MIGRATION)
            with pytest.raises(MigrationBlocked, match="take a full snapshot"):
                snapshots.save(tmp_path / "diff.snap", diff=True)
            assert not (tmp_path / "diff.snap").exists()
            again = snapshots.save(tmp_path / "full.snap")
            assert snapshots.save(tmp_path / "diff.snap", diff=True).parent == again.id
            snapshots.close()
            with pytest.raises(MigrationBlocked, match="take a full snapshot"):
                snapshots.save(tmp_path / "late.snap", diff=True)
        assert system.global_dirty_tracking == 0


def test_restore_reads_and_checks_each_config_once(tmp_path, monkeypatch):
    """Each file is opened once, its CONFIG checked once and the stream loaded from there on: the
    chain that was checked is the one loaded."""
    from kvmshim.migration.layout import MachineLayout
    from kvmshim.migration.transport import Listener

    full, diff = tmp_path / "full.snap", tmp_path / "diff.snap"
    with Machine(RAM) as src:
        src.load("hello")
        with Snapshots(src) as snapshots:
            snapshots.save(full)
            snapshots.save(diff, diff=True)
    opened, checked = [], []
    accept, check = Listener.accept, MachineLayout.check
    monkeypatch.setattr(Listener, "accept", lambda self, *a: opened.append(self.uri) or accept(self, *a))
    monkeypatch.setattr(MachineLayout, "check", lambda self, config: checked.append(config) or check(self, config))
    with Machine(RAM) as dst:
        dst.load("hello")
        stats = restore(dst, full, diff)
        assert dst.run(timeout=30).reason == "stopped" and dst.serial.output == b"Hello from kvmshim guest!\n"
    assert opened == [f"file:{full}", f"file:{diff}"] and len(checked) == 2
    assert stats.config["snapshot"]["parent"] == checked[0]["snapshot"]["id"]
