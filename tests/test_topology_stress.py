"""Topology changes while vCPU threads run (in the spirit of the kernel's memslot_modification_stress_test).

Both vCPUs run tests/data/guests/topology-stress.S: each writes and checks its stripe of region W,
checks the tags of the readonly-toggled region R, and round-trips its probe register (MMIO). The
main thread meanwhile adds, removes and moves scratch regions (some over RAM, some over each
other), toggles logging and readonly, re-flags W (a delete and re-add of its slot over the same
range) and splits it with an overlay in its unused tail. Slot changes that would open a hole run
with every vCPU held out of KVM_RUN, so the guests must see only their own exits (probe and
control port) and end with exactly the memory they wrote. After each change the host waits until
every vCPU has been back in the guest, so every change meets running vCPUs. ``--soak``
(KVMSHIM_SOAK=1) makes 10,000 changes; by default 2,500 with two vCPUs and 1,000 with one, every
kind equally often.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from kvmshim.machine import Machine
from memapi import AccessRules, MemoryRegion, MemoryRegionOps

pytestmark = pytest.mark.kvm
GUEST = Path(__file__).parent / "data" / "guests" / "topology-stress.S"
PAGE, CTRL_PORT, ERROR_PORT = 0x1000, 0x520, 0x524
W_GPA, STRIPE, TAIL = 0x400000, 0x10000, 0x10000
R_GPA, R_PAGES, PROBE_GPA, RESULTS = 0x500000, 4, 0xC0000, 0x600000
SCRATCH = (0x800000, 0xC00000), (0x40000000, 0x44000000)  # over unused RAM, and above it


class Guests:
    """The stress guest on every vCPU, its devices, and what its vCPUs were seen doing."""

    def __init__(self, m: Machine) -> None:
        self.n = len(m.runners)
        self.finish, self.errors, self.unexpected = threading.Event(), [], []
        self.rounds = 0  # control-port reads, all vCPUs together
        self.probe = [0] * self.n
        self.w = MemoryRegion.ram("W", self.n * STRIPE + TAIL)
        self.r = MemoryRegion.ram("R", R_PAGES * PAGE)
        for page in range(R_PAGES):
            self.r.ram_block.write(page * PAGE, (0x52000000 + page).to_bytes(4, "little"))
        rules = AccessRules(4, 4)
        ctrl = MemoryRegion.io("ctrl", 8, MemoryRegionOps(read=self._ctrl, write=self._error, valid=rules, impl=rules))
        probe = MemoryRegion.io("probe", 8 * self.n, MemoryRegionOps(
            read=lambda mr, offset, size: self.probe[offset // 8],
            write=lambda mr, offset, value, size: self.probe.__setitem__(offset // 8, value), valid=rules, impl=rules))
        with m.memory_system.transaction():
            m.system.add_subregion_overlap(W_GPA, self.w, 1)
            m.system.add_subregion_overlap(R_GPA, self.r, 1)
            m.system.add_subregion_overlap(PROBE_GPA, probe, 1)
            m.io.add_subregion(CTRL_PORT, ctrl)
        m.load(GUEST)
        m.set_params(GUEST, W=W_GPA, STRIPE=STRIPE, WORDS=STRIPE // 64, RO=R_GPA, RO_PAGES=R_PAGES,
                     PROBE=PROBE_GPA, RESULTS=RESULTS)
        for runner in m.runners:
            runner.on_exit = self._exit

    def _ctrl(self, mr, offset: int, size: int) -> int:
        self.rounds += 1
        return 0 if self.finish.is_set() else 1

    def _error(self, mr, offset: int, value: int, size: int) -> None:
        self.errors.append(value)

    def _exit(self, kind: str, addr: int, value: int, size: int, is_write: bool) -> None:
        expected = (kind == "pio" and addr in (CTRL_PORT, ERROR_PORT)) or (
            kind == "mmio" and PROBE_GPA <= addr < PROBE_GPA + 8 * self.n)
        if not expected:
            self.unexpected.append((kind, hex(addr), value, size, is_write))

    def close(self) -> None:
        self.w.ram_block.close()
        self.r.ram_block.close()


class Topology:
    """Random topology changes around the guests: one ``step(kind)`` is one commit."""

    KINDS = ("add", "delete", "move", "log", "readonly", "reflag-w", "split-w", "batch")

    def __init__(self, m: Machine, guests: Guests, rng: random.Random) -> None:
        self.m, self.g, self.rng = m, guests, rng
        ops = MemoryRegionOps(read=lambda *a: 0, write=lambda *a: None)
        rams = [MemoryRegion.ram(f"s-ram{i}", 0x10000) for i in range(6)]
        self.pool = rams + [MemoryRegion.io(f"s-io{i}", 0x3000, ops) for i in range(3)] + [
            MemoryRegion.alias(f"s-alias{i}", rams[i], 0x1000 * i, 0x8000) for i in range(2)]
        self.rams, self.logged = rams + [guests.w], set()
        self.ro_targets = rams + [guests.r]
        self.overlay = MemoryRegion.io("w-overlay", 0x2000, ops)

    def addr(self) -> int:
        lo, hi = self.rng.choice(SCRATCH)
        return self.rng.randrange(lo, hi - 0x10000, PAGE) + self.rng.choice((0, 0, 0, 0x800))

    def step(self, kind: str) -> None:
        rng, system = self.rng, self.m.system
        mapped = [mr for mr in self.pool if mr.parent is not None]
        free = [mr for mr in self.pool if mr.parent is None]
        if kind == "add" and free:
            system.add_subregion_overlap(self.addr(), rng.choice(free), rng.choice((1, 2, 3)))
        elif kind == "delete" and mapped:
            system.del_subregion(rng.choice(mapped))
        elif kind == "move" and mapped:
            mr = rng.choice(mapped)
            near = mr.addr + rng.choice((-PAGE, PAGE, 0x800))  # overlaps where it was: a delete and an add
            mr.set_address(near if SCRATCH[0][0] <= near < SCRATCH[-1][1] and rng.random() < 0.5 else self.addr())
        elif kind == "log":
            mr = rng.choice(self.rams)
            mr.set_log(mr not in self.logged)
            self.logged ^= {mr}
        elif kind == "readonly":
            mr = rng.choice(self.ro_targets)
            mr.set_readonly(not mr.readonly)
        elif kind == "reflag-w":
            self.g.w.set_nonvolatile(not self.g.w.nonvolatile)
        elif kind == "split-w":
            if self.overlay.parent is None:
                system.add_subregion_overlap(W_GPA + self.g.n * STRIPE + rng.randrange(0, TAIL - 0x2000, PAGE),
                                             self.overlay, 2)
            else:
                system.del_subregion(self.overlay)
        elif kind == "batch":
            with self.m.memory_system.transaction():
                for _ in range(rng.randint(2, 4)):
                    self.step(rng.choice(self.KINDS[:-1]))

    def close(self) -> None:
        for mr in self.logged:
            mr.set_log(False)
        for mr in self.pool + [self.overlay]:
            if mr.parent is not None:
                mr.parent.del_subregion(mr)
        for mr in self.rams[:-1]:
            mr.ram_block.close()


def back_in_the_guest(m: Machine, threads: list) -> None:
    """Wait until each vCPU has run guest code again, so that the next change meets running vCPUs
    (a host thread holding the GIL would otherwise starve them)."""
    deadline = time.monotonic() + 30
    for runner in m.runners:
        while not runner.in_kvm_run:
            assert all(t.is_alive() for t in threads), "a vCPU thread ended early"
            assert time.monotonic() < deadline, "a vCPU never went back into the guest"
            time.sleep(1e-5)


@contextlib.contextmanager
def counting_inhibits(m: Machine, counter: Counter):
    """Count the listener's inhibits (vCPUs held out of KVM_RUN) per change kind being made."""
    inhibit = m.kvm_memory.inhibit
    state = {"kind": None}

    def counted():
        counter[state["kind"]] += 1
        return inhibit()

    m.kvm_memory.inhibit = counted
    try:
        yield state
    finally:
        m.kvm_memory.inhibit = inhibit


@pytest.mark.parametrize("vcpus", [1, 2])
def test_topology_changes_while_vcpus_run(vcpus, soak):
    changes = 10_000 if soak else 2_500 if vcpus == 2 else 1_000
    rng = random.Random(6)
    with Machine(vcpus=vcpus) as m:
        g = Guests(m)
        topo = Topology(m, g, rng)
        inhibited, made = Counter(), Counter()
        threads = [m.start(i, timeout=600) for i in range(g.n)]
        start = time.monotonic()
        try:
            with counting_inhibits(m, inhibited) as state:
                kinds: list[str] = []
                while sum(made.values()) < changes:
                    if not kinds:
                        kinds = rng.sample(Topology.KINDS, len(Topology.KINDS))
                    state["kind"] = kind = kinds.pop()
                    topo.step(kind)
                    made[kind] += 1
                    back_in_the_guest(m, threads)
            elapsed = time.monotonic() - start
            rounds_during = g.rounds
        finally:
            g.finish.set()
            outcomes = [t.join(60) for t in threads]
            topo.close()
        print(f"{changes} changes in {elapsed:.2f} s ({dict(made)}); inhibited commits {dict(inhibited)}; "
              f"guest rounds meanwhile {rounds_during}")
        assert [o.reason for o in outcomes] == ["hlt"] * g.n
        assert g.errors == [], "a guest read back something else than it wrote"
        assert g.unexpected == [], "a guest exited where it should not have (a hole in its memory)"
        assert rounds_during > 10 * g.n, "the guests barely ran while the topology changed"
        assert inhibited["reflag-w"] == made["reflag-w"] and inhibited["split-w"] == made["split-w"], inhibited
        assert all(inhibited[k] for k in ("add", "delete", "move", "readonly", "log")), inhibited
        for index in range(g.n):
            last = m.memory.read_int(RESULTS + 4 * index, 4)
            value = (index << 24 | last).to_bytes(4, "little")
            stripe = g.w.ram_block.read(index * STRIPE, STRIPE)
            assert stripe == (value + bytes(60)) * (STRIPE // 64), f"vCPU {index}: W lost writes"
            assert g.probe[index] == last
        assert g.w.ram_block.read(g.n * STRIPE, TAIL) == bytes(TAIL)
        g.close()
