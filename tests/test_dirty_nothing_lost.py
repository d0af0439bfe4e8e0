"""Nothing lost: the guest writes while the host deletes, re-adds, moves and splits a logged slot.

The sweeper (in a vCPU thread) writes ever larger tick numbers into random pages of region R
and sets a journal bit for each page it writes. The host, meanwhile, unmaps and remaps R, moves
it away and back, splits its slot with an MMIO overlay, and takes dirty bits at random moments.
Logging is toggled per epoch; at both ends of an epoch the vCPU is held out of KVM_RUN so the
host can compare R's contents: every page that changed during the epoch must have been reported,
and nothing the guest never wrote may be.
"""
from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

import memapi
from kvmshim.machine import Machine
from memapi import MemoryRegion
from test_dirty_log import MODES, PAGE, dirty_pages, page_values, sweeper

pytestmark = pytest.mark.kvm
R_GPA, R_PAGES, JOURNAL = 0x100000, 100, 0x80000


def _operations(m: Machine, r: MemoryRegion, hole: MemoryRegion):
    def remap():
        m.system.del_subregion(r)
        m.system.add_subregion(R_GPA, r)

    def move_away_and_back():
        r.set_address(R_GPA + 0x400000)
        r.set_address(R_GPA)

    def split():
        m.system.add_subregion_overlap(R_GPA + 0x20000, hole, 2)
        m.system.del_subregion(hole)

    def split_in_one_commit():
        with m.memory_system.transaction():
            m.system.add_subregion_overlap(R_GPA + 0x30000, hole, 2)
        with m.memory_system.transaction():
            m.system.del_subregion(hole)
            r.set_address(R_GPA)

    return [remap, move_away_and_back, split, split_in_one_commit]


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the guest made no progress"
        time.sleep(0.001)


@pytest.mark.parametrize("mode", MODES)
def test_no_dirty_bit_is_lost_while_the_slot_changes(mode):
    rng = random.Random(4)
    with Machine(ram_size=1 << 20, **MODES[mode]) as m:
        r = MemoryRegion.ram("R", R_PAGES * PAGE)
        hole = MemoryRegion.io("hole", 0x3000, memapi.MemoryRegionOps(
            read=lambda *a: 0, write=lambda *a: None))
        m.system.add_subregion(R_GPA, r)
        counter, finish = itertools.count(1), threading.Event()
        port = sweeper(m, lambda: 0 if finish.is_set() else next(counter), FIRST=R_GPA // PAGE, COUNT=R_PAGES,
                       PER_TICK=4, PATTERN=1, JOURNAL=JOURNAL)
        ops = _operations(m, r, hole)
        thread = m.start()
        reported: set[int] = set()
        changed_total = 0
        try:
            for _ in range(4):
                with m.runner.paused():
                    r.set_log(True)
                    before = page_values(r, range(R_PAGES))
                epoch: set[int] = set()
                start = port.ticks
                for _ in range(25):
                    rng.choice(ops)()
                    if rng.random() < 0.3:
                        epoch |= dirty_pages(r)
                _wait_for(lambda start=start: port.ticks > start + 20)
                with m.runner.paused():
                    r.set_log(False)  # collects what the kernel still holds
                    epoch |= dirty_pages(r)
                    after = page_values(r, range(R_PAGES))
                changed = {p for p in range(R_PAGES) if after[p] != before[p]}
                assert changed <= epoch, f"{mode}: pages {sorted(changed - epoch)} changed but were never reported"
                reported |= epoch
                changed_total += len(changed)
        finally:
            finish.set()  # the guest ends its tick (journal included) and exits
            thread.join(10)
        assert m.exit_status == 0
        journal = int.from_bytes(m.memory.read(JOURNAL, (R_PAGES + 7) // 8)[0], "little")
        written = {p for p in range(R_PAGES) if journal >> p & 1}
        assert reported <= written, f"{mode}: pages {sorted(reported - written)} reported but never written"
        assert changed_total > 20
        assert m.kvm_memory.failed_fetches == 0
        r.ram_block.close()
