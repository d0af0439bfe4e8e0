"""Exact KVM ioctl sequences of the memory core on real KVM, seen through `kvmshim trace`.

Each test runs a script of tests/data/trace_scenarios in a child process under the tracer;
the script's mark() calls split the trace into phases (see trace_fixture.py).
"""
from __future__ import annotations

import pytest

from trace_fixture import traced  # noqa: F401 - the fixture

pytestmark = pytest.mark.kvm
MiB = 1 << 20
SLOT_CALLS = ("KVM_SET_USER_MEMORY_REGION", "KVM_GET_DIRTY_LOG", "KVM_CLEAR_DIRTY_LOG")


def test_booting_hello(traced):
    t = traced("hello")
    setup, run, close = t.phases
    slots = t.report["slots"]
    created = [e for e in setup if e.request not in ("KVM_CHECK_EXTENSION", "KVM_ENABLE_CAP")]
    assert [e.request for e in created] == (
        ["KVM_GET_VCPU_MMAP_SIZE", "KVM_CREATE_VM"] + ["KVM_SET_USER_MEMORY_REGION"] * len(slots)
        + ["KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU", "KVM_SET_CPUID2"])  # QEMU's qemu64 CPUID, as QEMU sets it
    create_vm, create_vcpu = created[1], created[-2]
    assert create_vm.kind == "kvm" and {e.fd for e in created[2:-3]} == {create_vm.result}
    assert created[-1].fd == create_vcpu.result
    assert t.slots(0) == [(i, gpa, size, "READONLY" if flags else "0") for i, (gpa, size, flags) in enumerate(slots)]
    assert create_vcpu.arg == 0

    assert [e.request for e in run[:3]] == ["KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_REGS"]
    assert run[2].arg["rip"] == 0x1000 and run[2].arg["rsp"] == 0x8000
    runs = run[3:]
    assert {e.request for e in runs} == {"KVM_RUN"} and all(e.fd == create_vcpu.result for e in runs)
    assert all(e.exit["reason"] == "IO" and e.result == 0 for e in runs)
    polls = [e for e in runs if e.exit["direction"] == "IN"]
    outs = [e for e in runs if e.exit["direction"] == "OUT"]
    assert {e.exit["port"] for e in polls} == {0x3FD}
    assert bytes(e.exit["data"][0] for e in outs if e.exit["port"] == 0x3F8).decode() == t.report["output"]
    assert t.report["output"] == "Hello from kvmshim guest!\n"
    assert outs[-1] is runs[-1] and outs[-1].exit == {
        "reason": "IO", "direction": "OUT", "port": 0x501, "size": 1, "count": 1, "data": [0]}

    assert t.slots(2) == [(i, gpa, 0, "0") for i, (gpa, size, flags) in enumerate(slots)]


def test_bar_move_in_one_commit_redoes_only_the_moved_slots(traced):
    t = traced("bar_move")
    assert t.slots(0) == [(0, 0, MiB, "0"), (1, 0xE0000000, 0x10000, "0"), (2, 0xE0010000, 0x10000, "0"),
                          (3, 0xE0020000, 0x10000, "0")]
    assert t.slots(1) == [(1, 0xE0000000, 0, "0"), (3, 0xE0020000, 0, "0"),
                          (1, 0xF0000000, 0x10000, "0"), (3, 0xF0020000, 0x10000, "0")]
    assert t.requests(1) == ["KVM_SET_USER_MEMORY_REGION"] * 4


def test_overlay_over_ram_is_scenario_33(traced):
    t = traced("overlay")
    assert t.slots(0) == [(0, 0, 512 * MiB, "0"), (1, 0xFFFC0000, 0x40000, "READONLY")]
    assert t.slots(1) == [(0, 0, 0, "0"), (0, 0, 0xA0000, "0"), (2, 0xC0000, 512 * MiB - 0xC0000, "0")]
    ram = t.phases[0][-2].arg["userspace_addr"]
    assert [e.arg["userspace_addr"] for e in t.phases[1]] == [ram, ram, ram + 0xC0000]


def test_readonly_flip_on_an_existing_slot_resets_it_first(traced):
    t = traced("readonly_flip")
    assert t.slots(1) == [(0, 0, 0, "LOG_DIRTY_PAGES"), (0, 0, 2 * MiB, "LOG_DIRTY_PAGES")]
    assert t.requests(1) == ["KVM_SET_USER_MEMORY_REGION"] * 2


def test_dirty_log_start_stop_and_delete(traced):
    t = traced("dirty_log")
    start, run, stop, restart, delete = t.phases[1:]
    assert t.slots(1) == [(0, 0, MiB, "LOG_DIRTY_PAGES")]  # log_start: same id re-set, no delete
    assert t.requests(1) == ["KVM_SET_USER_MEMORY_REGION"]

    assert t.report == {"exit": "HLT", "dirty": [3, 5]}
    guest, get, clear = run
    assert guest.request == "KVM_RUN" and guest.exit == {"reason": "HLT"}
    assert get.request == "KVM_GET_DIRTY_LOG" and get.arg["slot"] == 0 and get.arg["dirty_pages"] == [3, 5]
    assert clear.request == "KVM_CLEAR_DIRTY_LOG" and clear.arg["pages"] == [3, 5]
    assert (clear.arg["slot"], clear.arg["first_page"], clear.arg["num_pages"]) == (0, 0, MiB // 4096)

    assert t.requests(3, *SLOT_CALLS) == ["KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION"]  # log_stop
    assert t.slots(3) == [(0, 0, MiB, "0")]
    assert t.slots(4) == [(0, 0, MiB, "LOG_DIRTY_PAGES")]
    assert t.requests(5, *SLOT_CALLS) == ["KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION"]
    assert t.phases[5][0].arg["slot"] == 0 and t.slots(5) == [(0, 0, 0, "0")]


def test_ioeventfd_add_and_del_repeat_the_datamatch(traced):
    t = traced("ioeventfd")
    mmio, pio = t.report["mmio_fd"], t.report["pio_fd"]
    assert [e.arg for e in t.phases[1]] == [
        {"datamatch": 0x23456789, "addr": 0xFE000010, "len": 4, "fd": mmio, "flags": "DATAMATCH"},
        {"datamatch": 0x23456789, "addr": 0xFE000010, "len": 4, "fd": mmio, "flags": "DATAMATCH|DEASSIGN"}]
    assert [e.arg for e in t.phases[2]] == [
        {"datamatch": 0x2345, "addr": 0x700, "len": 2, "fd": pio, "flags": "DATAMATCH|PIO"},
        {"datamatch": 0x2345, "addr": 0x700, "len": 2, "fd": pio, "flags": "DATAMATCH|PIO|DEASSIGN"}]
    assert all(e.request == "KVM_IOEVENTFD" and e.result == 0 for e in t.phases[1] + t.phases[2])


def test_coalesced_zones_registered_and_unregistered(traced):
    t = traced("coalesced")
    assert [(e.request, e.arg) for e in t.phases[1]] == [
        ("KVM_REGISTER_COALESCED_MMIO", {"addr": 0xFE001000, "size": 0x100, "pio": 0}),
        ("KVM_UNREGISTER_COALESCED_MMIO", {"addr": 0xFE001000, "size": 0x100, "pio": 0})]
    assert [(e.request, e.arg) for e in t.phases[2]] == [
        ("KVM_REGISTER_COALESCED_MMIO", {"addr": 0x710, "size": 8, "pio": 1}),
        ("KVM_UNREGISTER_COALESCED_MMIO", {"addr": 0x710, "size": 8, "pio": 1})]


def test_overlapping_slot_is_eexist_and_a_typed_error(traced):
    t = traced("overlap")
    (failed,) = t.phases[1]
    assert (failed.request, failed.result, failed.errno) == ("KVM_SET_USER_MEMORY_REGION", -1, "EEXIST")
    assert failed.arg["slot"] == 1 and failed.arg["guest_phys_addr"] == 0x1000
    assert t.report["type"] == "KvmError" and t.report["ioctl"] == "KVM_SET_USER_MEMORY_REGION"
    assert t.report["errno"] == "EEXIST"
    assert t.report["message"].startswith("KVM_SET_USER_MEMORY_REGION: EEXIST (File exists) [slot=1 gpa=0x1000")
