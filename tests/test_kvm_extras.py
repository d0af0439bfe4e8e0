"""Issue 8 on real KVM: a mirrored RAM bank seen by a guest, resizeable RAM slots, `mtree --json`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import memapi
from kvm import MemFlag
from kvm_helpers import expected_slots
from kvmshim.machine import Machine
from memapi import MemoryRegion
from memapi.ram import DirtyClient

pytestmark = pytest.mark.kvm
GUESTS = Path(__file__).parent / "data" / "guests"


def slots_of(machine: Machine, mr: MemoryRegion) -> list[tuple[int, int, int]]:
    """(gpa, size, host address) of the slots over ``mr``'s memory."""
    return sorted((s.gpa, s.size, s.host_addr) for s in machine.kvm_memory.slots.values() if s.mr is mr)


def assert_slots_match_flatview(machine: Machine) -> None:
    table = [(gpa, size, flags & MemFlag.READONLY) for gpa, size, flags in machine.kvm_memory.slot_table()]
    assert table == expected_slots(machine.memory)


def record_ioctls(vm) -> list[tuple]:
    """Log each real KVM_SET_USER_MEMORY_REGION as (name, slot, gpa, size) and KVM_GET_DIRTY_LOG as (name, slot)."""
    calls: list[tuple] = []
    set_region, get_log = vm.set_user_memory_region, vm.get_dirty_log

    def set_user_memory_region(slot, gpa, size, *rest):
        calls.append(("set_user_memory_region", slot, gpa, size))
        return set_region(slot, gpa, size, *rest)

    def get_dirty_log(slot, bitmap):
        calls.append(("get_dirty_log", slot))
        return get_log(slot, bitmap)

    vm.set_user_memory_region, vm.get_dirty_log = set_user_memory_region, get_dirty_log
    return calls


def test_guest_sees_a_mirror_written_through_another_window():
    bank = MemoryRegion.ram("bank", 0x1000)
    with Machine() as m:
        m.system.add_subregion_overlap(0x30000, MemoryRegion.mirror("bank-mirror", bank, 0x4000), 1)
        host = bank.ram_block.host_addr
        assert slots_of(m, bank) == [(0x30000 + k * 0x1000, 0x1000, host) for k in range(4)]
        assert_slots_match_flatview(m)
        m.load(GUESTS / "mirror-window.S")
        m.run(timeout=30)
        assert m.exit_status == 0
        assert m.porttest.writes == [(0, 0x5A, 1), (0, 0xBEEF, 2)]
        assert bank.ram_block.read(0x10, 1) == b"\x5a" and bank.ram_block.read(0x20, 2) == b"\xef\xbe"
        assert m.mtree(flatview=True).count("(prio 0, ram): bank KVM\n") == 4
    bank.ram_block.close()


def test_resize_moves_no_host_memory_leaves_no_stale_slot_and_keeps_dirty_pages():
    rr = MemoryRegion.resizeable_ram("rr", 0x4000, 0x10000)
    rr.ram_block.write(0x3000, b"R")
    host = rr.ram_block.host_addr
    with Machine() as m:
        m.ram.ram_block.write(0x43000, b"M")
        m.system.add_subregion_overlap(0x40000, rr, 1)
        rr.set_log(True)
        assert slots_of(m, rr) == [(0x40000, 0x4000, host)]
        spec = m.load(GUESTS / "resize-peek.S")
        m.run(timeout=30)
        assert m.porttest.writes == [(0, ord("R"), 1)]

        ioctls = record_ioctls(m.vm)
        old_id = m.kvm_memory.lookup(0x40000, 0x4000).id
        rr.ram_resize(0x10000)
        assert slots_of(m, rr) == [(0x40000, 0x10000, host)]
        assert_slots_match_flatview(m)
        assert ioctls.index(("get_dirty_log", old_id)) < ioctls.index(("set_user_memory_region", old_id, 0x40000, 0))
        snap = memapi.snapshot_and_clear_dirty(rr, 0, 0x10000, DirtyClient.VGA)
        assert snap.get_dirty(rr, 0x1000, 1) and rr.ram_block.read(0x1000, 1) == b"\x77"

        rr.ram_resize(0x2000)
        assert slots_of(m, rr) == [(0x40000, 0x2000, host)]
        assert_slots_match_flatview(m)
        m.vcpu.set_real_mode(spec.cs, spec.ip, sp=spec.sp)
        m.run(timeout=30)
        assert m.porttest.writes[-1] == (0, ord("M"), 1)
        rr.set_log(False)
    rr.ram_block.close()


def test_cli_mtree_json():
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "mtree", "--json"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [t["address_spaces"] for t in doc["trees"]] == [["memory"], ["I/O"]]
    ram = next(r for r in doc["flatviews"][0]["ranges"] if r["region"] == "ram")
    assert ram["start"] == "0x0" and ram["accel"] == ["memory"]
    assert {"serial", "debug-exit"} <= {r["region"] for r in doc["flatviews"][1]["ranges"]}
