"""vCPU threads and a host thread changing the map: one FlatView per access, and pauses that hold.

A FlatView is published by one attribute store and never changes after; every access takes the
view once, so even an access split over many ranges sees the old map or the new one, never a mix.
``Machine.paused()`` (the KVM listener's inhibit) holds every vCPU out of KVM_RUN, nests across
threads, and holds no lock across its block, so a vCPU thread's own commit inside a device
callback completes while another thread holds a pause.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

import memapi
from kvmshim.machine import Machine
from memapi import AccessRules, MemoryRegion, MemoryRegionOps

GUESTS = Path(__file__).parent / "data" / "guests"
COUNTERS, COUNTER_PORT = 0x10000, 0x528


def _tagged_devices(tag: int, count: int) -> list[MemoryRegion]:
    rules = AccessRules(1, 8)
    ops = MemoryRegionOps(read=lambda mr, offset, size: int.from_bytes(bytes([tag]) * size, "little"),
                          write=lambda *a: None, valid=rules, impl=rules)
    return [MemoryRegion.io(f"dev-{tag:x}-{i}", 8, ops) for i in range(count)]


@pytest.fixture
def fast_switching():
    """Switch threads every microsecond, so a reader is often interrupted mid-access."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_each_access_resolves_against_one_flatview(fast_switching):
    """Readers split a 256-byte read over 32 ranges while a writer swaps two maps 1,000 times."""
    root = MemoryRegion.container("root", 1 << 64)
    space = memapi.AddressSpace(root, "as")
    maps = _tagged_devices(0xAA, 32), _tagged_devices(0xBB, 32)

    def show(devices: list[MemoryRegion]) -> None:
        with memapi.transaction():
            for old in list(root.subregions):
                root.del_subregion(old)
            for i, dev in enumerate(devices):
                root.add_subregion(8 * i, dev)

    show(maps[0])
    old_view = space.current_map
    old_ranges = [fr.key() for fr in old_view]
    stop, reads, mixed = threading.Event(), [0], []

    def reader() -> None:
        while not stop.is_set():
            data = space.read(0, 256)[0]
            reads[0] += 1
            if len(set(data)) != 1:
                mixed.append(data)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    for i in range(1000):
        show(maps[i % 2 == 0])
    stop.set()
    for thread in readers:
        thread.join()
    assert reads[0] > 100 and mixed == []
    assert [fr.key() for fr in old_view] == old_ranges  # a published view never changes
    space.destroy()


def counters(m: Machine) -> tuple[int, int]:
    data = m.memory.read(COUNTERS, 8)[0]
    return int.from_bytes(data[:4], "little"), int.from_bytes(data[4:], "little")


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.mark.kvm
def test_pause_holds_every_vcpu_and_nests_across_threads():
    with Machine(vcpus=2) as m:
        m.load(GUESTS / "counter.S")  # counts forever without a single exit: only a kick stops it
        threads = [m.start(i) for i in range(2)]
        wait_until(lambda: min(counters(m)) > 0)
        second_in, second_out = threading.Event(), threading.Event()

        def second_pauser() -> None:
            with m.paused():
                second_in.set()
                second_out.wait(10)

        helper = threading.Thread(target=second_pauser)
        with m.paused():
            assert not any(r.in_kvm_run for r in m.runners)
            frozen = counters(m)
            time.sleep(0.05)
            assert counters(m) == frozen
            helper.start()
            assert second_in.wait(10)
        time.sleep(0.05)
        assert counters(m) == frozen, "one pause ended while another still holds"
        second_out.set()
        helper.join(10)
        wait_until(lambda: all(a > b for a, b in zip(counters(m), frozen, strict=True)))
        for thread in threads:
            assert thread.stop().reason == "stopped"


@pytest.mark.kvm
def test_a_vcpu_commit_completes_while_another_thread_holds_a_pause():
    """vCPU 0's port callback re-flags a RAM region (a delete and re-add: it needs the inhibit,
    which skips vCPU 0 itself and holds vCPU 1) while the main thread holds ``paused()``."""
    with Machine(vcpus=2) as m:
        bank = MemoryRegion.ram("bank", 0x4000)
        m.system.add_subregion_overlap(0x200000, bank, 1)
        entered, go, done = threading.Event(), threading.Event(), threading.Event()

        def on_port(mr, offset: int, value: int, size: int) -> None:
            if value == 0 and not done.is_set():
                entered.set()
                go.wait(10)
                bank.set_nonvolatile(not bank.nonvolatile)
                done.set()

        rules = AccessRules(4, 4)
        m.io.add_subregion(COUNTER_PORT, MemoryRegion.io("counter-port", 4, MemoryRegionOps(
            read=lambda *a: 0, write=on_port, valid=rules, impl=rules)))
        m.load(GUESTS / "counter.S")
        m.set_params(GUESTS / "counter.S", EVERY=1000)
        threads = [m.start(i) for i in range(2)]
        assert entered.wait(10)
        with m.paused():
            go.set()
            assert done.wait(10), "the vCPU thread's commit is stuck behind the pause"
        for thread in threads:
            thread.stop()
        assert m.kvm_memory.lookup(0x200000, 0x4000) is not None
    bank.ram_block.close()
