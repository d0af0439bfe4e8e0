"""Guest faults end in a typed report with the vCPU's registers, never a hang or a dead host.

Triple fault, entry failure and internal error; accesses nothing claims (QEMU's default, or
UnassignedAccess with ``strict_unassigned``); a device callback that raises (DeviceError: the
address, the region, the exception as ``__cause__``, and a VM that can be inspected, resumed or
torn down); a guest that loops forever (GuestTimeout, from the main thread or a vCPU thread).
"""
from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from kvm import ExitReason
from kvmshim.devices import TESTDEV_ID
from kvmshim.errors import MachineStateError
from kvmshim.machine import TESTDEV_GPA, Machine
from listeners.vcpu_runner import (
    DeviceError,
    EntryFailure,
    GuestFault,
    GuestTimeout,
    InternalError,
    TripleFault,
    UnassignedAccess,
)
from memapi import MemoryRegion, MemoryRegionOps

pytestmark = pytest.mark.kvm
GUESTS = Path(__file__).parent / "data" / "guests"
HELLO = b"Hello from kvmshim guest!\n"


def still_usable() -> None:
    """The host process can build and run a fresh machine after the fault."""
    with Machine() as m:
        m.load("hello")
        m.run(timeout=30)
        assert bytes(m.serial.output) == HELLO


def test_triple_fault_from_paging_without_tables():
    """PE and PG on with CR3 at unmapped memory: the first fetch faults with no IDT to deliver it."""
    with Machine() as m:
        m.load("hello")
        sregs = m.vcpu.get_sregs()
        sregs.cr0 |= 0x80000001
        sregs.cr3 = 0xFFFFF000
        m.vcpu.set_sregs(sregs)
        # Hardware KVM and kvm_pvm report SHUTDOWN; an emulated delivery may end as INTERNAL_ERROR.
        with pytest.raises((TripleFault, InternalError)) as info:
            m.run(timeout=10)
        assert info.value.registers.rip == 0x1000 and "cs:ip=0000:0x1000" in str(info.value)
    still_usable()


def test_internal_error_fetching_code_from_mmio(tmp_path):
    source = tmp_path / "mmio-fetch.S"
    source.write_text("# kvmshim: kind=flat\n.code16\n.text\n.globl _start\n_start:\n    ljmp $0xd000, $0\n")
    with Machine() as m:
        m.load(source)
        with pytest.raises(InternalError) as info:
            m.run(timeout=10)
        assert info.value.registers.cs == (0xD000, 0xD0000) and "suberror 1" in str(info.value)
    still_usable()


def test_entry_failure_is_reported():
    """An invalid guest state (protected mode, a data segment in CS): VMX without invalid-state
    emulation refuses the entry (FAIL_ENTRY 0x80000021); KVM that emulates it, or kvm_pvm, may run
    or fault instead. Whatever the kernel does ends cleanly; then the FAIL_ENTRY report itself is
    checked on a kvm_run record the test writes (the kernel cannot be made to produce one here)."""
    with Machine() as m:
        m.load("hello")
        sregs = m.vcpu.get_sregs()
        sregs.cr0 |= 1
        sregs.cs.type = 0x3
        m.vcpu.set_sregs(sregs)
        try:
            m.run(timeout=10)
        except GuestFault as fault:
            assert isinstance(fault, (EntryFailure, InternalError, TripleFault)), fault
        rs = m.vcpu.run_struct
        rs.exit_reason = ExitReason.FAIL_ENTRY
        rs.fail_entry.hardware_entry_failure_reason = 0x80000021
        with pytest.raises(EntryFailure, match=r"hardware reason 0x80000021\) at cs:ip="):
            m.runner._fault(rs.exit_reason)
    still_usable()


REPORTS = [(0, 0, 4), (0, 0xFFFFFFFF, 4), (0, 0, 4)]


def test_unassigned_memory_and_ports_behave_as_in_qemu():
    with Machine(ram_size=0x80000) as m:
        m.load(GUESTS / "unassigned.S")
        m.run(timeout=30)
        assert m.exit_status == 0 and m.porttest.writes == REPORTS


def test_strict_unassigned_names_each_access_and_resumes_as_qemu_would():
    expected = [("memory", 0x90000, False), ("I/O", 0x700, False), ("memory", 0x90000, True),
                ("I/O", 0x700, True), ("memory", 0x90000, False)]
    seen = []
    with Machine(ram_size=0x80000, strict_unassigned=True) as m:
        m.load(GUESTS / "unassigned.S")
        for _ in expected:
            with pytest.raises(UnassignedAccess) as info:
                m.run(timeout=30)
            fault = info.value
            seen.append((fault.space, fault.address, fault.is_write))
            assert f"{fault.address:#x}" in str(fault) and fault.size == 4
        m.run(timeout=30)
        assert seen == expected
        assert m.exit_status == 0 and m.porttest.writes == REPORTS


class Flaky:
    """A device over the test device that raises on the accesses listed in ``fail``."""

    def __init__(self, m: Machine, fail: set[str]) -> None:
        self.fail = fail
        ops = MemoryRegionOps(read=self.read, write=self.write)
        self.region = MemoryRegion.io("flaky", 0x1000, ops)
        m.system.add_subregion_overlap(TESTDEV_GPA, self.region, 2)

    def read(self, mr, offset: int, size: int) -> int:
        if "read" in self.fail:
            raise ValueError(f"flaky read at {offset:#x}")
        return TESTDEV_ID

    def write(self, mr, offset: int, value: int, size: int) -> None:
        if "write" in self.fail:
            raise RuntimeError(f"flaky write of {value:#x}")


@pytest.mark.parametrize("access", ["write", "read"])
def test_device_error_reports_and_the_vm_resumes(access):
    with Machine() as m:
        device = Flaky(m, {access})
        m.load(GUESTS / "device-call.S")
        with pytest.raises(DeviceError) as info:
            m.run(timeout=30)
        error = info.value
        assert (error.address, error.region, error.is_write, error.size) == (
            TESTDEV_GPA + (4 if access == "write" else 0), device.region, access == "write", 4)
        assert isinstance(error.__cause__, (RuntimeError, ValueError))
        assert f"region 'flaky' on a 4-byte MMIO {access} at {error.address:#x}" in str(error)
        assert f"in {access}\n" in "".join(traceback.format_exception(error))  # the callback's frame
        assert m.memory.read(0x1000, 2)[0] == bytes.fromhex("b800")  # inspectable: the guest's code
        assert m.vcpu.get_regs().rip == error.registers.rip
        device.fail.clear()
        m.run(timeout=30)  # the failed write was dropped, a failed read returned 0
        assert m.exit_status == 0
        assert m.porttest.writes == [(0, TESTDEV_ID if access == "write" else 0, 4)]


def test_close_from_a_device_callback_is_refused_not_a_hang():
    """close() in a vCPU's own callback would wait for that vCPU forever: refused, machine intact."""
    with Machine() as m:
        closer = MemoryRegion.io("closer", 0x1000, MemoryRegionOps(
            read=lambda mr, offset, size: 0, write=lambda mr, offset, value, size: m.close()))
        m.system.add_subregion_overlap(TESTDEV_GPA, closer, 2)
        m.load(GUESTS / "device-call.S")
        with pytest.raises(DeviceError) as info:
            m.run(timeout=30)
        assert isinstance(info.value.__cause__, MachineStateError) and "call stop() there" in str(info.value.__cause__)
        assert not m.closed and m.memory.read(0x1000, 2)[0] == bytes.fromhex("b800")
    assert m.closed


def test_device_error_in_a_vcpu_thread_then_teardown():
    m = Machine()
    Flaky(m, {"write"})
    m.load(GUESTS / "device-call.S")
    thread = m.start()
    with pytest.raises(DeviceError, match="flaky write of 0x11223344"):
        thread.join(30)
    m.close()
    still_usable()


def test_timeout_stops_a_looping_guest_from_a_vcpu_thread():
    with Machine(vcpus=2) as m:
        m.load(GUESTS / "counter.S")
        threads = [m.start(i, timeout=0.3) for i in range(2)]
        for thread in threads:
            with pytest.raises(GuestTimeout) as info:
                thread.join(30)
            assert info.value.registers.rip > 0x1000
        counters = m.memory.read(0x10000, 8)[0]
        assert all(int.from_bytes(counters[i:i + 4], "little") > 1000 for i in (0, 4))
