"""Resources: create/run/destroy cycles leak nothing, and untouched guest RAM costs nothing.

Each cycle builds a machine, writes 1 MiB of its RAM from the host (so a RAM block that outlives
its machine shows in RSS at once) and runs a guest: in the main thread; in a vCPU thread; on two
vCPUs in two threads, stopped from outside; with dirty logging through the dirty ring. After a
warm-up, fds, threads and KVM fds and mappings come back exactly, mappings within a small slack,
and RSS stays flat. ``--soak`` (KVMSHIM_SOAK=1) runs 10,000 cycles instead of 1,000. A machine
whose constructor fails half-way closes what it opened.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kvm import Cap, Kvm, KvmError
from kvmshim.machine import Machine
from listeners.kvm_dirty_ring import DirtyRingError
from memapi import MemoryRegion, RamBlockError
from resource_usage import assert_no_leak, usage

pytestmark = pytest.mark.kvm
GUESTS = Path(__file__).parent / "data" / "guests"
GiB, MiB = 1 << 30, 1 << 20
#: RSS growth allowed over all the measured cycles (a leaked machine would cost 1 MiB of RAM each).
RSS_SLACK = 16 * MiB


def cycle(index: int) -> None:
    kind = index % 4
    options = dict(vcpus=2) if kind == 2 else dict(dirty_ring=4096) if kind == 3 else {}
    with Machine(ram_size=4 * MiB, **options) as m:
        m.memory.write(0x100000, bytes([index & 0xFF]) * MiB)
        if kind == 2:
            m.load(GUESTS / "counter.S")
            for thread in [m.start(i) for i in range(2)]:
                assert thread.stop().reason == "stopped"
            return
        if kind == 3:
            m.ram.set_log(True)
        m.load("hello")
        outcome = m.start(timeout=30).join(30) if kind == 1 else m.run(timeout=30)
        assert outcome.reason == "stopped" and m.exit_status == 0


def test_create_run_destroy_cycles_leak_nothing(soak):
    cycles = 10_000 if soak else 1_000
    for index in range(40):
        cycle(index)
    before = usage()
    checkpoints = []
    for index in range(cycles):
        cycle(index)
        if (index + 1) % (cycles // 4) == 0:
            checkpoints.append(usage().rss_mib)
    after = usage()
    print(f"{cycles} cycles: fds {before.fds}->{after.fds}, maps {before.maps}->{after.maps}, "
          f"threads {before.threads}->{after.threads}, RSS MiB {before.rss_mib:.1f} -> "
          f"{', '.join(f'{r:.1f}' for r in checkpoints)}")
    assert_no_leak(before, after)
    assert after.rss - before.rss < RSS_SLACK, f"RSS grew {before.rss_mib:.1f} -> {after.rss_mib:.1f} MiB"


def test_64_gib_of_ram_costs_nothing_until_touched():
    before = usage()
    big = MemoryRegion.ram("big", 64 * GiB)
    try:
        with Machine() as m:
            m.system.add_subregion(GiB, big)  # one 64 GiB memslot at 1 GiB
            assert m.kvm_memory.lookup(GiB, 64 * GiB) is not None
            mapped = usage()
            for gib in range(64):  # the host touches one page per GiB ...
                m.memory.write(GiB + gib * GiB, b"host")
            m.load(GUESTS / "counter.S")  # ... and the guest one more, below 4 GiB
            m.set_params(GUESTS / "counter.S", COUNTERS=3 * GiB)
            m.start().stop()
            touched = usage()
            assert big.ram_block.read(2 * GiB, 4) != bytes(4)
            m.system.del_subregion(big)
    finally:
        big.ram_block.close()
    print(f"64 GiB region: VmSize +{(mapped.vms - before.vms) / GiB:.1f} GiB, VmRSS {before.rss_mib:.1f} -> "
          f"{mapped.rss_mib:.1f} (mapped) -> {touched.rss_mib:.1f} MiB (65 pages touched)")
    assert mapped.vms - before.vms >= 64 * GiB
    assert mapped.rss - before.rss < 8 * MiB
    assert touched.rss - mapped.rss < 4 * MiB


def test_a_machine_that_fails_to_build_leaks_nothing():
    with Kvm() as kvm:
        too_many = kvm.check_extension(Cap.MAX_VCPUS) + 1
    cycle(0)
    before = usage()
    for options, error in ((dict(ram_size=1 << 62), RamBlockError), (dict(dirty_ring=1000), DirtyRingError),
                           (dict(vcpus=too_many), KvmError)):
        with pytest.raises(error):
            Machine(**options)
    assert_no_leak(before, usage())
