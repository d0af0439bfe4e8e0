"""ioeventfd: EventNotifier on its own, then KVM_IOEVENTFD through the listeners on real KVM."""
from __future__ import annotations

import asyncio
import selectors

import pytest

from kvmshim.machine import Machine
from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps
from memapi.event_notifier import EventNotifier

BELL_PORT, BELL_GPA, COUNT = 0x520, 0xC8000, 200


def test_notifier_counts_and_clears():
    with EventNotifier() as e:
        assert not e.test_and_clear()
        e.set()
        e.set()
        assert e.read() == 2 and e.read() == 0
        e.set()
        assert e.test_and_clear() and not e.test_and_clear()
    assert e.closed
    with pytest.raises(ValueError):
        e.fileno()
    assert EventNotifier(initial=True).test_and_clear()


def test_notifier_with_selectors():
    with EventNotifier() as e, selectors.DefaultSelector() as sel:
        sel.register(e, selectors.EVENT_READ)
        assert sel.select(timeout=0) == []
        e.set()
        assert [key.fileobj for key, _ in sel.select(timeout=1)] == [e]


def test_notifier_with_asyncio():
    async def main(e: EventNotifier) -> int:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, e.set)
        return await asyncio.wait_for(e.wait(), 5)

    with EventNotifier() as e:
        assert asyncio.run(main(e)) == 1


class Bell:
    """A 4-byte doorbell register (PIO or MMIO) that records the writes reaching userspace."""

    def __init__(self, name: str) -> None:
        self.writes: list[int] = []
        self.region = MemoryRegion.io(name, 4, MemoryRegionOps(
            read=lambda mr, offset, size: 0, write=lambda mr, offset, value, size: self.writes.append(value),
            endianness=Endianness.LITTLE, valid=AccessRules(1, 4), impl=AccessRules(4, 4)))


@pytest.fixture
def machine():
    with Machine() as m:
        m.pio_bell, m.mmio_bell = Bell("pio-bell"), Bell("mmio-bell")
        m.io.add_subregion(BELL_PORT, m.pio_bell.region)
        m.system.add_subregion_overlap(BELL_GPA, m.mmio_bell.region, 1)
        yield m


def ring(m: Machine, **params) -> int:
    """Run the doorbell guest; returns the exits it took."""
    m.load("doorbell")
    m.set_params("doorbell", COUNT=COUNT, **params)
    outcome = m.run(timeout=30)
    assert m.exit_status == 0
    return outcome.exits


@pytest.mark.kvm
@pytest.mark.parametrize("match", [True, False])
@pytest.mark.parametrize("kind", ["pio", "mmio"])
def test_matching_writes_signal_without_exits(machine, kind, match):
    bell = machine.pio_bell if kind == "pio" else machine.mmio_bell
    where = dict(PORT=BELL_PORT) if kind == "pio" else dict(MMIO=BELL_GPA)
    with EventNotifier() as e:
        bell.region.add_eventfd(0, 4, match, 0x1234, e)
        exits = ring(machine, VALUE=0x1234, **where)
        assert e.read() == COUNT
        assert exits < 10 and bell.writes == []
        bell.region.del_eventfd(0, 4, match, 0x1234, e)


@pytest.mark.kvm
@pytest.mark.parametrize("kind", ["pio", "mmio"])
def test_non_matching_data_exits_to_the_device(machine, kind):
    bell = machine.pio_bell if kind == "pio" else machine.mmio_bell
    where = dict(PORT=BELL_PORT) if kind == "pio" else dict(MMIO=BELL_GPA)
    with EventNotifier() as e:
        bell.region.add_eventfd(0, 4, True, 0x1234, e)
        exits = ring(machine, VALUE=0x1233, STEP=1, **where)  # only the second write matches
        assert e.read() == 1
        assert exits >= COUNT - 1 and len(bell.writes) == COUNT - 1 and 0x1234 not in bell.writes
        bell.region.del_eventfd(0, 4, True, 0x1234, e)


@pytest.mark.kvm
def test_moving_the_region_moves_the_ioeventfd(machine):
    region = machine.mmio_bell.region
    with EventNotifier() as e:
        region.add_eventfd(0, 4, False, 0, e)
        region.set_address(BELL_GPA + 0x1000)
        assert ring(machine, MMIO=BELL_GPA, VALUE=7) < 10 and e.read() == 0  # the old address is RAM again
        assert machine.memory.read_int(BELL_GPA, 4) == 7
        assert ring(machine, MMIO=BELL_GPA + 0x1000) < 10 and e.read() == COUNT
        machine.system.del_subregion(region)  # unmapping drops it: writes go to RAM, no signal
        assert ring(machine, MMIO=BELL_GPA + 0x1000) < 10 and e.read() == 0
        assert machine.memory.read_int(BELL_GPA + 0x1000, 4) == 0
        machine.system.add_subregion_overlap(BELL_GPA, region, 1)
        region.del_eventfd(0, 4, False, 0, e)


@pytest.mark.kvm
def test_a_notifier_closed_before_its_ioeventfd_is_deleted_still_leaves_kvm(machine):
    """KVM finds the ioeventfd to remove by fd: the listener kept its own copy, so after the owner
    closed the notifier first, the doorbell's writes reach the device again and nothing leaks."""
    bell = machine.pio_bell
    e = EventNotifier()
    bell.region.add_eventfd(0, 4, False, 0, e)
    assert ring(machine, PORT=BELL_PORT, VALUE=5) < 10 and bell.writes == []
    e.close()
    bell.region.del_eventfd(0, 4, False, 0, e)
    assert ring(machine, PORT=BELL_PORT, VALUE=5) >= COUNT and bell.writes == [5] * COUNT
    bell.region.add_eventfd(0, 4, False, 0, f := EventNotifier())  # no EEXIST: the old one is gone
    assert ring(machine, PORT=BELL_PORT, VALUE=5) < 10 and f.read() == COUNT
    bell.region.del_eventfd(0, 4, False, 0, f)
    f.close()
