"""Typed exit records and the two ring readers (coalesced MMIO, dirty ring) on real KVM."""
from __future__ import annotations

import mmap

import pytest

from kvm import (
    COALESCED_RING_ENTRIES,
    Cap,
    CoalescedEntry,
    CoalescedMmioRing,
    DirtyRing,
    ExitReason,
    ExitRecord,
    InternalError,
    InternalErrorExit,
    IoDirection,
    IoExit,
    MemFlag,
    MmioExit,
)
from test_kvm_binding import RAM_SIZE, host_addr, load_flat, machine, system  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kvm
SET_DS_B000 = bytes.fromhex("b800b08ed8")  # mov $0xb000, %ax; mov %ax, %ds (DS base: unmapped 0xb0000)
HLT = b"\xf4"


def run_to_hlt(vcpu) -> list:
    records = []
    while (record := (vcpu.run(), vcpu.exit_record())[1]).reason != ExitReason.HLT:
        records.append(record)
    assert record == ExitRecord(ExitReason.HLT)
    return records


def test_string_io_records_carry_count_and_every_element(machine):
    vm, vcpu, ram = machine
    # mov $0x80, %dx; mov $4, %cx; mov $0x1100, %si; rep outsb; out %ax, %dx (ax=0x1234); hlt
    code = bytes.fromhex("ba8000b90400be0011f36eb83412ef") + HLT
    load_flat(vcpu, ram, code)
    ram[0x1100:0x1104] = b"abcd"
    records = run_to_hlt(vcpu)
    assert all(isinstance(r, IoExit) and r.direction == IoDirection.OUT and r.port == 0x80 for r in records)
    string, word = records[:-1], records[-1]
    assert all(r.size == 1 and r.count == len(r.data) for r in string)  # count is 1 here, > 1 on hardware
    assert bytes(b for r in string for b in r.data) == b"abcd"
    assert (word.size, word.count, word.data) == (2, 1, (0x1234,))


def test_mmio_record(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, SET_DS_B000 + bytes.fromhex("c7060000efbe") + HLT)  # movw $0xbeef, (0)
    (record,) = run_to_hlt(vcpu)
    assert record == MmioExit(ExitReason.MMIO, 0xB0000, b"\xef\xbe", True)
    assert vcpu.mmio_exit()[0] == 0xB0000  # the fast path reads the same exit


def test_internal_error_record_has_suberror_and_data(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, b"\xcc")  # int3: in 32-bit protected mode, an emulator gap here
    flat = {"base": 0, "limit": 0xFFFFFFFF, "g": 1, "db": 1}
    vcpu.set_special_registers(cs={**flat, "selector": 8}, ds={**flat, "selector": 16},
                               ss={**flat, "selector": 16}, cr0=vcpu.special_registers().cr0 | 1)
    assert vcpu.run() == ExitReason.INTERNAL_ERROR
    record = vcpu.exit_record()
    assert isinstance(record, InternalErrorExit) and record.suberror is InternalError.EMULATION
    assert len(record.data) == vcpu.run_struct.internal.ndata and record.data


def test_coalesced_ring_entries_in_order(machine):
    vm, vcpu, ram = machine
    if not vm.check_extension(Cap.COALESCED_MMIO):
        pytest.fail("KVM_CAP_COALESCED_MMIO is missing (kvm-here.md lists it)")
    vm.register_coalesced_mmio(0xB0000, 0x1000)
    # movb $1, (0); movb $2, (1); movw $0x0403, (2); hlt
    load_flat(vcpu, ram, SET_DS_B000 + bytes.fromhex("c6060000 01c6060100 02c7060200 0304".replace(" ", "")) + HLT)
    ring = CoalescedMmioRing(vcpu)
    assert run_to_hlt(vcpu) == [] and len(ring) == 3 and ring.capacity == COALESCED_RING_ENTRIES
    first = next(ring.drain())
    assert first == CoalescedEntry(0xB0000, b"\x01", False) and len(ring) == 2  # consumed as yielded
    assert list(ring.drain()) == [CoalescedEntry(0xB0001, b"\x02", False), CoalescedEntry(0xB0002, b"\x03\x04", False)]
    assert len(ring) == 0 and list(ring.drain()) == []


def test_dirty_ring_harvest_then_reset(system):
    cap = Cap.DIRTY_LOG_RING_ACQ_REL if system.check_extension(Cap.DIRTY_LOG_RING_ACQ_REL) else Cap.DIRTY_LOG_RING
    ram = mmap.mmap(-1, RAM_SIZE)
    with system.create_vm() as vm:
        vm.enable_cap(cap, 4096)  # 256 entries, before any vCPU
        vm.set_user_memory_region(0, 0, RAM_SIZE, host_addr(ram), MemFlag.LOG_DIRTY_PAGES)
        with vm.create_vcpu(0) as vcpu:
            ring = DirtyRing(vcpu, 256)
            # movb $1, (0x3000); movb $1, (0x5000); movb $2, (0x3001); hlt
            load_flat(vcpu, ram, bytes.fromhex("c606003001c606005001c606013002") + HLT)
            run_to_hlt(vcpu)
            pages = list(ring.harvest())
            assert {(0, 3), (0, 5)} <= set(pages) and ring.harvested == len(pages)
            assert list(ring.harvest()) == []  # marked RESET: not yielded twice
            assert vm.reset_dirty_rings() == len(pages)
            with pytest.raises(ValueError, match="dirty ring of vcpu 0: 100 entries"):
                DirtyRing(vcpu, 100)
