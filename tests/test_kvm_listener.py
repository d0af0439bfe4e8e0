"""KVMMemoryListener on a real VM: scenarios 27 and 31-37 (the number in ``test_NN_``; QEMU's
kvm_set_phys_mem and kvm_region_commit), slot-table invariants, limits."""
from __future__ import annotations

import os
import random

import pytest

import memapi
from kvm import Kvm, MemFlag
from kvm_helpers import expected_slots, record_slot_ioctls
from listeners.kvm_memory import KVMIoListener, KVMMemoryListener, MemslotExhaustedError
from memapi import MemoryRegion as MR

pytestmark = pytest.mark.kvm
MiB = 1 << 20


@pytest.fixture
def vm():
    with Kvm() as kvm, kvm.create_vm() as vm:
        yield vm


@pytest.fixture
def kvm_space(vm):
    """(root, space, listener, ioctl log) with the listener registered on an empty root."""
    root = MR.container("system", 1 << 64)
    space = memapi.AddressSpace(root, "memory")
    listener = KVMMemoryListener(vm)
    space.register_listener(listener)
    calls = record_slot_ioctls(vm)
    yield root, space, listener, calls
    space.unregister_listener(listener)
    space.destroy()


def test_31_alignment(kvm_space):
    root, space, kml, calls = kvm_space
    ram = MR.ram("ram", 0x10000)
    root.add_subregion(0x1000, MR.alias("a", ram, 0x800, 0x3000))  # gpa 0x1000 + ... see below
    root.del_subregion(root.subregions[0])
    calls.clear()
    root.add_subregion(0x1800, MR.alias("b", ram, 0x1800, 0x3000))
    assert kml.slot_table() == [(0x2000, 0x2000, 0)]
    slot = kml.lookup(0x2000, 0x2000)
    assert slot.host_addr == ram.ram_block.host_addr + 0x2000
    root.add_subregion(0x100000, MR.alias("small", ram, 0x8000, 0x400))
    assert kml.lookup(0x100000, 0x400) is None and not kml.has_memory(0x100000, 0x400)


def test_32_split_by_max_slot_size(vm):
    root = MR.container("system", 1 << 64)
    space = memapi.AddressSpace(root, "memory")
    kml = KVMMemoryListener(vm, max_slot_size=4 * MiB)
    space.register_listener(kml)
    calls = record_slot_ioctls(vm)
    ram = MR.ram("ram", 10 * MiB)
    root.add_subregion(0, ram)
    assert calls == [(0, 0, 4 * MiB, 0), (1, 4 * MiB, 4 * MiB, 0), (2, 8 * MiB, 2 * MiB, 0)]
    calls.clear()
    root.del_subregion(ram)
    assert calls == [(0, 0, 0, 0), (1, 4 * MiB, 0, 0), (2, 8 * MiB, 0, 0)]
    space.unregister_listener(kml)


def test_33_slot_reuse_and_deletes_before_adds(kvm_space):
    root, space, kml, calls = kvm_space
    ram = MR.ram("ram", 512 * MiB)
    root.add_subregion(0, ram)
    root.add_subregion(0xFFFC0000, MR.rom("bios", 0x40000))
    calls.clear()
    root.add_subregion_overlap(0xA0000, MR.io("vga", 0x20000), 1)
    assert calls == [(0, 0, 0, 0), (0, 0, 0xA0000, 0), (2, 0xC0000, 512 * MiB - 0xC0000, 0)]


def test_27_romd_toggle_deletes_and_recreates_readonly_slot(kvm_space):
    root, space, kml, calls = kvm_space
    dev = MR.rom_device("flash", 0x10000, memapi.MemoryRegionOps(read=lambda *a: 0, write=lambda *a: None))
    root.add_subregion(0xFFFF0000, dev)
    assert kml.slot_table() == [(0xFFFF0000, 0x10000, int(MemFlag.READONLY))]
    dev.rom_device_set_romd(False)
    assert kml.slot_table() == []
    dev.rom_device_set_romd(True)
    assert kml.slot_table() == [(0xFFFF0000, 0x10000, 2)]


def test_34_global_dirty_start_stop_reflags_in_place(kvm_space):
    root, space, kml, calls = kvm_space
    root.add_subregion(0, MR.ram("ram", 2 * MiB))
    root.add_subregion(0xFFFF0000, MR.rom("bios", 0x10000))
    calls.clear()
    memapi.global_dirty_log_start(memapi.GlobalDirty.MIGRATION)
    assert calls == [(0, 0, 2 * MiB, 1), (1, 0xFFFF0000, 0x10000, 3)]
    calls.clear()
    memapi.global_dirty_log_stop(memapi.GlobalDirty.MIGRATION)
    assert calls == [(0, 0, 2 * MiB, 0), (1, 0xFFFF0000, 0x10000, 2)]


def test_35_readonly_flip_on_existing_slot_resets_it_first(kvm_space):
    root, space, kml, calls = kvm_space
    ram = MR.ram("ram", 2 * MiB)
    alias = MR.alias("window", ram, 0, 2 * MiB)
    alias.set_readonly(True)
    root.add_subregion(0, alias)
    root.add_subregion(0x10000000, MR.ram("other", 0x1000))  # no flatview-root shortcut past the alias
    assert kml.lookup(0, 2 * MiB).flags == MemFlag.READONLY
    calls.clear()
    # The section stays readonly (the alias), so only the flag-update path sees the region's own flag go away:
    slot = kml.lookup(0, 2 * MiB)
    slot.section_readonly = False
    ram.set_log(True)
    assert calls == [(0, 0, 0, 1), (0, 0, 2 * MiB, 1)]


def test_36_readonly_alias_gives_readonly_slot(kvm_space):
    root, space, kml, calls = kvm_space
    ram = MR.ram("pc.ram", 2 * MiB)
    pam = MR.alias("pam-rom", ram, 0xC0000, 0x4000)
    pam.set_readonly(True)
    root.add_subregion(0, MR.alias("ram-below-4g", ram, 0, 2 * MiB))
    root.add_subregion_overlap(0xC0000, pam, 1)
    assert (0, 0xC0000, 0) in kml.slot_table() and (0xC4000, 2 * MiB - 0xC4000, 0) in kml.slot_table()
    assert (0xC0000, 0x4000, 2) in kml.slot_table()
    assert "(prio 0, rom): pc.ram @00000000000c0000" in memapi.info_mtree(flatview=True, spaces=[space])


def test_37_ioeventfd_truncation(vm):
    io_root = MR.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    ports = memapi.AddressSpace(io_root, "I/O")
    listener = KVMIoListener(vm)
    ports.register_listener(listener)
    seen = []
    real = vm.ioeventfd
    vm.ioeventfd = lambda fd, addr, length, datamatch=None, pio=False, deassign=False: (
        seen.append((addr, length, datamatch, pio, deassign)), real(fd, addr, length, datamatch, pio, deassign))
    dev = MR.io("dev", 8, memapi.MemoryRegionOps(read=lambda *a: 0, write=lambda *a: None))
    io_root.add_subregion(0x700, dev)
    efd = os.eventfd(0)
    try:
        class Notifier:
            def fileno(self):
                return efd

        n = Notifier()
        dev.add_eventfd(0, 4, True, 0x12345, n)
        assert seen == [(0x700, 4, 0x2345, True, False)]
        dev.del_eventfd(0, 4, True, 0x12345, n)
        assert seen[-1] == (0x700, 4, 0x2345, True, True)
    finally:
        ports.unregister_listener(listener)
        os.close(efd)


def test_slot_table_matches_flatview_after_every_commit(kvm_space):
    root, space, kml, calls = kvm_space
    rng = random.Random(7)
    ram = MR.ram("ram", 16 * MiB)
    rom = MR.rom("rom", 0x20000)
    regions = [MR.alias(f"a{i}", ram, rng.randrange(0, 8 * MiB, 0x800), rng.choice([0x800, 0x3000, 0x10000]))
               for i in range(12)] + [rom, MR.io("dev", 0x1800)]
    for step in range(300):
        mr = rng.choice(regions)
        action = rng.random()
        if mr.parent is None:
            root.add_subregion_overlap(rng.randrange(0, 4 * MiB, 0x400), mr, rng.randint(-2, 2))
        elif action < 0.3:
            mr.set_address(rng.randrange(0, 4 * MiB, 0x400))
        elif action < 0.5:
            mr.set_enabled(not mr.enabled)
        elif action < 0.6 and mr.alias_target is not None:
            mr.set_readonly(not mr.readonly)
        else:
            root.del_subregion(mr)
        assert sorted(kml.slot_table()) == sorted(
            (g, s, f) for g, s, f in expected_slots(space)), f"step {step}"


def test_memslot_exhaustion_at_the_kernel_limit(kvm_space):
    root, space, kml, calls = kvm_space
    limit = kml.nr_slots
    ram = MR.ram("many", (limit + 1) * 0x2000)
    exhausted = pytest.raises(MemslotExhaustedError, match=f"no free slot available: all {limit} KVM_CAP_NR_MEMSLOTS")
    with exhausted, memapi.transaction():
        for i in range(limit + 1):
            root.add_subregion(i * 0x2000, MR.alias(f"p{i}", ram, i * 0x2000, 0x1000))
    assert len(kml.slots) == limit
    # The unslotted page still works: its accesses exit and are served from the FlatView.
    assert space.write(limit * 0x2000, b"z") == memapi.MemTxResult.OK
