"""One MemorySystem per machine: machines in one process share nothing (real /dev/kvm).

Two machines run vCPUs side by side while one's transactions, renders, listener calls,
global dirty logging, `info mtree` and lock are checked not to reach the other. Machines
dropped unclosed are collected with their fds; two vCPU threads hammering one owned device
are serialized, never dropped; a true re-entrant access is refused and reported; MIGRATION
bits survive global_dirty_log_stop; close() copes with a notifier its user closed.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from pathlib import Path

import pytest

import memapi
from kvm import MemFlag
from kvmshim import BareMachine, Machine
from kvmshim.tick import TICK_PORT, TickPort
from listeners.errors import DirtyRingError
from memapi import (
    AccessRules,
    CrossSystemError,
    DirtyClient,
    EventNotifier,
    GlobalDirty,
    MemoryListener,
    MemoryRegion,
    MemoryRegionOps,
    MemorySystem,
    MemTxResult,
)
from resource_usage import usage

pytestmark = pytest.mark.kvm
GUESTS = Path(__file__).parent / "data" / "guests"
PAGE, MiB = 4096, 1 << 20
LOG_MODES = {"get": dict(manual_protect=False), "clear": {}, "ring": dict(dirty_ring=1 << 16)}


class Calls(MemoryListener):
    """Counts every topology callback it gets."""

    def __init__(self) -> None:
        super().__init__(name="calls")
        self.count = 0

    def begin(self) -> None:
        self.count += 1

    def region_add(self, section) -> None:
        self.count += 1


def counting(m: Machine) -> list:
    """Start vCPU 0 on the counter guest (it increments the dword at 0x10000 without exits)."""
    m.load(GUESTS / "counter.S")
    thread = m.start(0)
    wait_for_count(m, 0x10000)
    return [thread]


def wait_for_count(m: Machine, gpa: int, count: int = 1) -> None:
    """Until the counter guest has incremented the dword at ``gpa`` (from 0) to ``count`` or more."""
    deadline = time.monotonic() + 30
    while m.memory.read_int(gpa, 4) < count:
        assert time.monotonic() < deadline, "the counter guest never ran"
        time.sleep(0.001)


@pytest.fixture
def two():
    """Two machines, each with its counter guest running in a vCPU thread."""
    a, b = Machine(ram_size=4 * MiB), Machine(ram_size=4 * MiB)
    threads = counting(a) + counting(b)
    yield a, b
    for thread in threads:
        thread.stop()
    a.close()
    b.close()


def test_renders_and_listener_calls_stay_in_their_machine(two):
    a, b = two
    calls = Calls()
    a.memory.register_listener(calls)
    a_view, before = a.memory.current_map, calls.count
    with b.memory_system.transaction():
        b.system.add_subregion_overlap(0x200000, MemoryRegion.ram("b-only", 0x10000), 2)
    assert calls.count == before and a.memory.current_map is a_view
    assert "b-only" in b.mtree(flatview=True) and "b-only" not in a.mtree(flatview=True)
    assert "b-only" not in memapi.info_mtree(flatview=True)
    assert a.memory_system.address_spaces() == [a.memory, a.io_space]
    a.memory.unregister_listener(calls)


def test_an_open_transaction_holds_only_its_own_machine(two):
    a, b = two
    assert a.memory_system.lock is not b.memory_system.lock
    opened, done, held = threading.Event(), threading.Event(), []

    def hold_a() -> None:
        with a.memory_system.transaction():
            opened.set()
            held.append(done.wait(30))  # False if b's change had to wait for this transaction

    holder = threading.Thread(target=hold_a)
    holder.start()
    try:
        opened.wait(30)
        b.system.add_subregion_overlap(0x200000, MemoryRegion.ram("b-extra", 0x10000), 2)
        assert "b-extra" in b.mtree(flatview=True)
    finally:
        done.set()
        holder.join(30)
    assert held == [True]


def test_global_dirty_logging_of_one_machine_leaves_the_other_alone(two):
    a, b = two
    b_slots = b.kvm_memory.slot_table()
    assert a.memory_system.global_dirty_log_start(GlobalDirty.MIGRATION)
    try:
        assert all(flags & MemFlag.LOG_DIRTY_PAGES for gpa, size, flags in a.kvm_memory.slot_table()
                   if not flags & MemFlag.READONLY)
        assert b.kvm_memory.slot_table() == b_slots and not b.memory_system.global_dirty_tracking
        wait_for_count(a, 0x10000, a.memory.read_int(0x10000, 4) + 2)  # a store after logging began
        a.memory_system.global_dirty_log_sync()
        snap = memapi.snapshot_and_clear_dirty(a.ram, 0, a.ram.size, DirtyClient.MIGRATION)
        assert snap.get_dirty(a.ram, 0x10000, PAGE)  # the counter's page, while it runs
    finally:
        a.memory_system.global_dirty_log_stop(GlobalDirty.MIGRATION)
    assert memapi.default_system().global_dirty_tracking == 0


def test_a_region_of_one_system_cannot_join_another():
    with BareMachine(ram_size=MiB) as a, BareMachine(ram_size=MiB) as b:
        names = a.memory_system.name, b.memory_system.name
        into_a = MemoryRegion.alias("into-a", a.ram, 0, PAGE)
        with pytest.raises(CrossSystemError) as info:
            b.system.add_subregion(0x100000, into_a)
        assert all(f"'{name}'" in str(info.value) for name in ("into-a", "ram", *names)), info.value
        assert [fr.mr.name for fr in b.memory.current_map] == ["ram"] and into_a.system is None
        once_a = MemoryRegion.ram("once-a", PAGE)
        a.system.add_subregion(0x200000, once_a)
        a.system.del_subregion(once_a)  # unlinked, still a's for life
        with pytest.raises(CrossSystemError, match="'once-a'"):
            b.system.add_subregion(0x200000, once_a)
        with pytest.raises(CrossSystemError):
            memapi.AddressSpace(a.system, "again", MemorySystem("lonely"))


def test_bare_machine_has_only_ram():
    with BareMachine(ram_size=MiB) as m:
        assert [(fr.start, fr.end, fr.mr.name) for fr in m.memory.current_map] == [(0, MiB, "ram")]
        assert [fr.mr.name for fr in m.io_space.current_map] == ["io"]


def test_machines_dropped_unclosed_release_their_fds():
    BareMachine(ram_size=MiB).close()  # warm-up: modules, allocator
    before = usage()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(200):
            m = Machine(ram_size=MiB)
            m.load("hello")
            del m
        gc.collect()
    after = usage()
    assert after.kvm_fds == before.kvm_fds and after.fds == before.fds, f"{before} -> {after}"
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning) and "was not closed" in str(w.message)]
    assert len(unclosed) == 200


class OwnedCounter:
    """A device with an owner (so its accesses are serialized): counts the stores it gets."""

    def __init__(self) -> None:
        self.writes = 0
        rules = AccessRules(4, 4)
        self.region = MemoryRegion.io("owned-counter", 0x1000, MemoryRegionOps(
            read=lambda mr, offset, size: self.writes, write=self._write, valid=rules, impl=rules), owner=self)

    def _write(self, mr, offset: int, value: int, size: int) -> None:
        count = self.writes
        for _ in range(20):  # widen the read-modify-write window a racing thread would hit
            pass
        self.writes = count + 1


def test_two_vcpus_hammering_one_owned_device_lose_nothing():
    with Machine(vcpus=2) as m:
        device = OwnedCounter()
        m.system.add_subregion_overlap(0xD1000, device.region, 2)
        m.load(GUESTS / "hammer.S")
        threads = [m.start(i, timeout=120) for i in range(2)]
        for thread in threads:
            assert thread.join(120).reason == "hlt"
        assert device.writes == 40_000


def test_two_host_threads_hammering_one_owned_device_lose_nothing():
    with BareMachine(ram_size=MiB) as m:
        device = OwnedCounter()
        m.system.add_subregion(0x200000, device.region)

        def hammer() -> None:
            for _ in range(20_000):
                assert m.memory.write_int(0x200000, 1, 4) == MemTxResult.OK

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert device.writes == 40_000 and m.memory_system.blocked_reentrant == 0


def test_true_reentrancy_is_refused_and_reported(caplog):
    with BareMachine(ram_size=MiB) as m:
        results = []

        def write(mr, offset, value, size):
            if value == 1:  # a DMA by the device into its own registers
                results.append(m.memory.write_int(0x200000, 2, 4))

        owner = object()
        region = MemoryRegion.io("self-dma", 0x1000, MemoryRegionOps(read=lambda *a: 0, write=write), owner=owner)
        m.system.add_subregion(0x200000, region)
        with caplog.at_level(logging.WARNING, logger="memapi"):
            assert m.memory.write_int(0x200000, 1, 4) == MemTxResult.OK
        assert results == [MemTxResult.ACCESS_ERROR] and m.memory_system.blocked_reentrant == 1
        assert "Blocked re-entrant IO on MemoryRegion: self-dma" in caplog.text


@pytest.mark.parametrize("mode", LOG_MODES)
def test_migration_bits_survive_global_dirty_log_stop(mode):
    """The issue's reproducer: a guest writes page 3 of a logged region, then tracking stops."""
    with Machine(ram_size=MiB, **LOG_MODES[mode]) as m:
        region = MemoryRegion.ram("logged", 16 * PAGE)
        m.system.add_subregion_overlap(0x100000, region, 1)
        m.load(GUESTS / "counter.S")
        m.set_params(GUESTS / "counter.S", COUNTERS=0x100000 + 3 * PAGE)
        region.set_log(True)
        m.memory_system.global_dirty_log_start(GlobalDirty.MIGRATION)
        thread = m.start(0)
        wait_for_count(m, 0x100000 + 3 * PAGE)  # the guest writes page 3, and keeps writing it
        thread.stop()
        m.memory_system.global_dirty_log_stop(GlobalDirty.MIGRATION)
        migration = memapi.snapshot_and_clear_dirty(region, 0, region.size, DirtyClient.MIGRATION)
        vga = memapi.snapshot_and_clear_dirty(region, 0, region.size, DirtyClient.VGA)
        assert migration.dirty_pages() == vga.dirty_pages() == [3]
        region.set_log(False)


def test_close_after_the_user_closed_an_event_notifier_leaves_no_fd():
    BareMachine(ram_size=MiB).close()
    before = usage()
    m = Machine()
    notifier = EventNotifier()
    m.testdev.region.add_eventfd(0x20, 4, False, 0, notifier)
    notifier.close()
    m.close()
    assert usage().kvm_fds == before.kvm_fds and usage().fds == before.fds


def test_a_ring_full_exit_with_nothing_to_reap_raises_instead_of_spinning():
    """A reaper that never harvests: the second ring-full exit in a row is a DirtyRingError."""
    pages, first = 1656, 256
    with Machine(ram_size=pages * PAGE, dirty_ring=4096) as m:
        port = TickPort(iter([1, 0]).__next__)
        m.io.add_subregion(TICK_PORT, port.region)
        m.load("sweeper")
        m.set_params("sweeper", SCREEN=0, FIRST=first, COUNT=pages - first, PER_TICK=pages - first)
        m.runner.on_dirty_ring_full = lambda: 0
        m.ram.set_log(True)
        with pytest.raises(DirtyRingError, match="twice in a row"):
            m.run(timeout=60)
        m.ram.set_log(False)


def test_a_pc_machine_failing_half_way_leaks_nothing():
    from kvmshim.pc.machine import PcMachine

    BareMachine(ram_size=MiB).close()
    before = usage()
    with pytest.raises(DirtyRingError):
        PcMachine(dirty_ring=1000)  # refused once the VM exists: the VM and /dev/kvm must close
    after = usage()
    assert (after.fds, after.kvm_fds, after.kvm_maps) == (before.fds, before.kvm_fds, before.kvm_maps)
