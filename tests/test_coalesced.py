"""Coalesced MMIO/PIO on real KVM: writes queue in the ring without exits and reach the device in order."""
from __future__ import annotations

import threading
import time

import pytest

from kvm import COALESCED_RING_ENTRIES, Cap, ExitReason
from kvmshim.machine import Machine
from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps

pytestmark = pytest.mark.kvm
FIFO_PORT, FIFO_GPA = 0x530, 0xC8000


class Fifo:
    """A write-only 4-byte register recording every value, and reads (which always exit)."""

    def __init__(self, name: str) -> None:
        self.log: list = []
        self.region = MemoryRegion.io(name, 0x1000, MemoryRegionOps(
            read=lambda mr, offset, size: self.log.append("read") or 0,
            write=lambda mr, offset, value, size: self.log.append(value),
            endianness=Endianness.LITTLE, valid=AccessRules(1, 4), impl=AccessRules(4, 4)))


@pytest.fixture
def machine():
    with Machine() as m:
        m.pio_fifo, m.mmio_fifo = Fifo("pio-fifo"), Fifo("mmio-fifo")
        m.io.add_subregion(FIFO_PORT, m.pio_fifo.region)
        m.system.add_subregion_overlap(FIFO_GPA, m.mmio_fifo.region, 1)
        yield m


def test_ring_page_offset_is_the_capability(machine):
    assert machine.vm.check_extension(Cap.COALESCED_MMIO) == 2
    assert machine.coalesced.pending() == 0


@pytest.mark.parametrize("kind", ["mmio", "pio"])
@pytest.mark.parametrize("count", [100, 1000])
def test_writes_exit_only_when_the_ring_fills_and_arrive_in_order(machine, kind, count):
    fifo = machine.pio_fifo if kind == "pio" else machine.mmio_fifo
    fifo.region.add_coalescing(0, 4)
    machine.load("doorbell")
    where = dict(PORT=FIFO_PORT) if kind == "pio" else dict(MMIO=FIFO_GPA)
    machine.set_params("doorbell", COUNT=count, VALUE=1, STEP=1, **where)
    outcome = machine.run(timeout=30)
    assert fifo.log == list(range(1, count + 1))
    capacity = COALESCED_RING_ENTRIES - 1  # one slot stays free to tell full from empty
    assert outcome.exits <= count // (capacity + 1) + 3  # the write that finds the ring full exits
    fifo.region.clear_coalescing()


def test_without_coalescing_every_write_exits(machine):
    machine.load("doorbell")
    machine.set_params("doorbell", COUNT=100, MMIO=FIFO_GPA, VALUE=1, STEP=1)
    assert machine.run(timeout=30).exits >= 100 and machine.mmio_fifo.log == list(range(1, 101))


def _queue_and_spin(machine, count: int):
    """Start the guest writing ``count`` coalesced values, then spinning with no exit."""
    machine.mmio_fifo.region.add_coalescing(0, 4)
    machine.load("doorbell")
    machine.set_params("doorbell", COUNT=count, MMIO=FIFO_GPA, VALUE=1, STEP=1, SPIN=1)
    thread = machine.start()
    deadline = time.monotonic() + 10
    while machine.coalesced.pending() < count:
        assert time.monotonic() < deadline, "the writes never reached the ring"
        time.sleep(0.001)
    assert machine.mmio_fifo.log == []
    return thread


def test_transaction_begin_drains(machine):
    thread = _queue_and_spin(machine, 5)
    try:
        with machine.memory_system.transaction():
            assert machine.mmio_fifo.log == [1, 2, 3, 4, 5] and machine.coalesced.pending() == 0
    finally:
        thread.stop()


def test_access_to_a_flush_before_access_region_drains_first(machine):
    thread = _queue_and_spin(machine, 3)
    try:
        machine.memory.read_int(FIFO_GPA, 4)  # the region is marked flush_coalesced_mmio
        assert machine.mmio_fifo.log == [1, 2, 3, "read"]
    finally:
        thread.stop()


def test_a_stopped_run_has_replayed_every_queued_write(machine):
    """stop() kicks the vCPU out of KVM_RUN with no exit to serve: the loop still replays the ring,
    so the host code that stopped it sees the devices as the guest left them."""
    thread = _queue_and_spin(machine, 4)
    assert thread.stop().reason == "stopped"
    assert machine.mmio_fifo.log == [1, 2, 3, 4] and machine.coalesced.pending() == 0


def test_close_replays_the_writes_no_run_loop_served():
    """The guest ran through plain Vcpu.run() (no run loop to replay the ring): close() replays it."""
    with Machine() as m:
        m.mmio_fifo = Fifo("mmio-fifo")
        m.system.add_subregion_overlap(FIFO_GPA, m.mmio_fifo.region, 1)
        m.mmio_fifo.region.add_coalescing(0, 4)
        m.load("doorbell")
        m.set_params("doorbell", COUNT=3, MMIO=FIFO_GPA, VALUE=1, STEP=1, SPIN=1)
        kick = threading.Timer(0.2, m.vcpu.kick)
        kick.start()
        assert m.vcpu.run() == ExitReason.INTR
        kick.join()
        assert m.coalesced.pending() == 3 and m.mmio_fifo.log == []
    assert m.mmio_fifo.log == [1, 2, 3]
