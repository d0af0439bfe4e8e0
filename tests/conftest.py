"""The project's own shared fixtures: a recording listener, and a check that no test leaks a
transaction. The KVM fixtures and markers (kvm_machine, guest_asm, kvm_trace, ``kvm``, ...) are
kvmshim's pytest plugin's (kvmshim/pytest_plugin.py), active since kvmshim is installed."""
from __future__ import annotations

import gc

import pytest

import memapi

pytest_plugins = ["soak_plugin"]


class Recorder(memapi.MemoryListener):
    """Records every callback as a tuple (callback, listener name, details)."""

    def __init__(self, log: list, name: str, priority: int = 0) -> None:
        super().__init__(priority=priority, name=name)
        self.log = log

    def _rec(self, what, *details):
        self.log.append((what, self.name) + details)

    def begin(self): self._rec("begin")
    def commit(self): self._rec("commit")
    def region_add(self, s): self._rec("region_add", *span(s))
    def region_del(self, s): self._rec("region_del", *span(s))
    def region_nop(self, s): self._rec("region_nop", *span(s))
    def log_start(self, s, old, new): self._rec("log_start", *span(s), old, new)
    def log_stop(self, s, old, new): self._rec("log_stop", *span(s), old, new)
    def eventfd_add(self, s, match, data, e):
        self._rec("eventfd_add", s.offset_within_address_space, s.size, match, data)
    def eventfd_del(self, s, match, data, e):
        self._rec("eventfd_del", s.offset_within_address_space, s.size, match, data)
    def coalesced_io_add(self, s, addr, size): self._rec("coalesced_io_add", addr, size)
    def coalesced_io_del(self, s, addr, size): self._rec("coalesced_io_del", addr, size)


class PlainRecorder(Recorder):
    """A Recorder without eventfd callbacks (QEMU: NULL eventfd_add/del)."""

    eventfd_add = memapi.MemoryListener.eventfd_add
    eventfd_del = memapi.MemoryListener.eventfd_del


def span(section):
    name = section.mr.name if section.mr is not None else None
    return (section.offset_within_address_space, section.size, name)


def flat(space) -> list[tuple]:
    """The current FlatView as (start, end_inclusive, name, offset, readonly) tuples."""
    return [(r.start, r.end - 1, r.mr.name, r.offset_in_region, r.readonly) for r in space.current_map]


@pytest.fixture(autouse=True)
def clean_core():
    yield
    state = memapi.default_system()
    leaked = state.depth
    state.depth = 0
    state.update_pending = state.ioeventfd_pending = False
    if state.global_dirty_tracking:
        state.global_dirty_tracking = 0
    for space in state.address_spaces():
        for listener in list(space.listeners):
            space.unregister_listener(listener)
    gc.collect()
    assert leaked == 0, "test left a transaction open"


@pytest.fixture
def calls() -> list:
    return []


@pytest.fixture
def root():
    return memapi.MemoryRegion.container("root", 1 << 64)


@pytest.fixture
def space(root):
    return memapi.AddressSpace(root, "as")


@pytest.fixture
def listeners(space, calls):
    """L1 (prio 0) and L2 (prio 10) recording on "as"; the replay calls are dropped."""
    l1, l2 = Recorder(calls, "L1", 0), Recorder(calls, "L2", 10)
    space.register_listener(l1)
    space.register_listener(l2)
    calls.clear()
    return l1, l2
