"""vCPU and VM state for migration, registers, MSRs and CPUID on the real /dev/kvm (no mocks).

Each state object must survive ``bytes(state)`` -> ``from_bytes`` -> ``set_*`` -> ``get_*``
unchanged, and each call's error path is the one this kernel gives (docs/kvm.md).
"""
from __future__ import annotations

import errno

import pytest

from kvm import (
    Cap,
    ClockData,
    CpuidEntry,
    DebugRegs,
    Fpu,
    Irqchip,
    IrqchipId,
    KvmError,
    Lapic,
    MpState,
    MsrAccessError,
    PitState,
    Registers,
    Segment,
    VcpuEvents,
    Xcrs,
    Xsave,
)
from test_kvm_binding import machine, system  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kvm
IA32_TSC, IA32_SYSENTER_CS, IA32_APIC_BASE = 0x10, 0x174, 0x1B
NO_SUCH_MSR = 0xDEADBEEF


@pytest.fixture
def chip_vm(system):
    """A VM with the in-kernel irqchip and PIT, and vCPU 0 (created after them, as KVM needs)."""
    with system.create_vm() as vm:
        vm.create_irqchip()
        vm.create_pit2()
        with vm.create_vcpu(0) as vcpu:
            yield vm, vcpu


def assert_round_trip(get, put, kind):
    state = get()
    assert isinstance(state, kind)
    copy = kind.from_bytes(bytes(state))
    assert copy == state and bytes(copy) == bytes(state)
    put(copy)
    assert get() == state


@pytest.mark.parametrize("name, kind", [
    ("vcpu_events", VcpuEvents), ("fpu", Fpu), ("xsave", Xsave), ("xcrs", Xcrs),
    ("debugregs", DebugRegs), ("lapic", Lapic)])
def test_vcpu_state_round_trips_through_bytes(chip_vm, name, kind):
    vm, vcpu = chip_vm
    assert_round_trip(getattr(vcpu, f"get_{name}"), getattr(vcpu, f"set_{name}"), kind)


@pytest.mark.parametrize("chip", list(IrqchipId))
def test_irqchip_state_round_trips(chip_vm, chip):
    vm, _ = chip_vm
    state = vm.get_irqchip(chip)
    assert state.chip_id == chip
    assert_round_trip(lambda: vm.get_irqchip(chip), vm.set_irqchip, Irqchip)


def test_pit_and_clock_round_trip(chip_vm):
    vm, _ = chip_vm
    pit = vm.get_pit2()
    vm.set_pit2(PitState.from_bytes(bytes(pit)))

    def without_load_times(state):  # KVM restarts the counters' clock on set
        return [{k: v for k, v in c.items() if k != "count_load_time"} for c in state.fields()["channels"]]
    assert without_load_times(vm.get_pit2()) == without_load_times(pit)
    assert pit.fields()["channels"][0]["count"] == 0x10000  # i8254 reset: count 0 = 65536
    clock = vm.get_clock()
    assert isinstance(clock, ClockData) and clock.clock > 0
    vm.set_clock(ClockData.from_bytes(bytes(clock)))


def test_readable_fields(chip_vm):
    vm, vcpu = chip_vm
    assert vcpu.get_fpu().fcw == 0x37F  # FNINIT value after reset
    assert vcpu.get_xcrs().values == {0: 1}  # XCR0: x87 only
    assert vcpu.get_xsave().size == 4096 and vcpu.get_xsave().mxcsr == 0x1F80
    assert vcpu.get_lapic().apic_id == 0
    assert vcpu.get_lapic().register(Lapic.LVT0) & 0x700 == 0x700  # BSP: LINT0 in ExtINT mode
    assert vcpu.get_vcpu_events().fields()["exception"]["injected"] == 0
    assert vm.get_irqchip(IrqchipId.IOAPIC).redirection(0)["mask"] == 1
    assert vcpu.get_debugregs().dr7 == 0x400


def test_state_of_the_wrong_kind_or_size_is_refused(chip_vm):
    vm, vcpu = chip_vm
    with pytest.raises(TypeError, match="KVM_SET_FPU: needs a Fpu, got Xsave"):
        vcpu.set_fpu(vcpu.get_xsave())
    with pytest.raises(ValueError, match=r"Lapic: struct kvm_lapic_state is 1024 bytes, got 10"):
        Lapic.from_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="Xsave: 4098 bytes"):
        Xsave.from_bytes(b"\0" * 4098)


def test_kernel_rejects_invalid_state(chip_vm):
    vm, vcpu = chip_vm
    xcrs = vcpu.get_xcrs()
    xcrs.c.xcrs[0].value = 0  # XCR0 without x87
    events = vcpu.get_vcpu_events()
    events.c.flags = 0xFFFF
    debugregs = vcpu.get_debugregs()
    debugregs.c.flags = 1
    xsave = vcpu.get_xsave()
    raw = bytearray(bytes(xsave))
    raw[512:520] = b"\xff" * 8  # XSTATE_BV with components XCR0 does not enable
    clock = vm.get_clock()
    clock.c.flags = 0xFF
    chip = vm.get_irqchip(IrqchipId.PIC_MASTER)
    chip.c.chip_id = 7
    for call, state, name in ((vcpu.set_xcrs, xcrs, "KVM_SET_XCRS"),
                              (vcpu.set_vcpu_events, events, "KVM_SET_VCPU_EVENTS"),
                              (vcpu.set_debugregs, debugregs, "KVM_SET_DEBUGREGS"),
                              (vcpu.set_xsave, Xsave.from_bytes(raw), "KVM_SET_XSAVE"),
                              (vm.set_clock, clock, "KVM_SET_CLOCK"), (vm.set_irqchip, chip, "KVM_SET_IRQCHIP")):
        with pytest.raises(KvmError) as err:
            call(state)
        assert err.value.errno == errno.EINVAL and str(err.value).startswith(f"{name}: EINVAL")
    with pytest.raises(KvmError, match=r"KVM_GET_IRQCHIP: EINVAL .*\[chip=7\]"):
        vm.get_irqchip(7)


def test_state_calls_without_the_in_kernel_devices(machine):
    vm, vcpu, _ = machine
    with pytest.raises(KvmError, match=r"KVM_GET_LAPIC: EINVAL"):
        vcpu.get_lapic()
    with pytest.raises(KvmError, match=r"KVM_GET_IRQCHIP: ENXIO .*\[chip=PIC_MASTER\]"):
        vm.get_irqchip(IrqchipId.PIC_MASTER)
    with pytest.raises(KvmError, match=r"KVM_GET_PIT2: ENXIO"):
        vm.get_pit2()
    with pytest.raises(KvmError, match=r"KVM_SET_PIT2: ENXIO"):
        vm.set_pit2(PitState())
    with pytest.raises(KvmError, match=r"KVM_SET_LAPIC: EINVAL"):
        vcpu.set_lapic(Lapic())


def test_mp_state(chip_vm):
    vm, vcpu = chip_vm
    assert vcpu.get_mp_state() is MpState.RUNNABLE
    vcpu.set_mp_state(MpState.HALTED)
    assert vcpu.get_mp_state() is MpState.HALTED
    with pytest.raises(KvmError, match=r"KVM_SET_MP_STATE: EINVAL .*mp_state=77"):
        vcpu.set_mp_state(77)


def test_tsc_khz(machine):
    vm, vcpu, _ = machine
    khz = vcpu.get_tsc_khz()
    assert khz > 0
    vcpu.set_tsc_khz(khz)
    with pytest.raises(KvmError, match=r"KVM_SET_TSC_KHZ: EINVAL .*khz=1\]"):
        vcpu.set_tsc_khz(1)  # no scaling ratio that small


def test_registers_as_plain_ints(machine):
    vm, vcpu, _ = machine
    vcpu.set_registers(rip=0x1234, rax=0xFEED)
    regs = vcpu.registers()
    assert isinstance(regs, Registers) and (regs.rip, regs.rax, regs.rflags) == (0x1234, 0xFEED, 2)
    vcpu.set_special_registers(ds={"selector": 0x40, "base": 0x400}, cr0=0x60000010)
    sregs = vcpu.special_registers()
    assert sregs.ds == Segment(base=0x400, limit=0xFFFF, selector=0x40, type=3, present=1, s=1)
    assert sregs.cr0 == 0x60000010 and vcpu.get_sregs().ds.base == 0x400
    vcpu.set_special_registers(es=sregs.ds)
    assert vcpu.special_registers().es == sregs.ds
    with pytest.raises(TypeError, match="Registers: no register rpi"):
        vcpu.set_registers(rpi=1)
    with pytest.raises(TypeError, match="Segment: no register base_addr"):
        vcpu.set_special_registers(cs={"base_addr": 0})
    assert vcpu.registers().rip == 0x1234  # unchanged by the refused calls


def test_msrs_get_set_and_partial_success(system, machine):
    vm, vcpu, _ = machine
    index_list = system.msr_index_list()
    assert {IA32_TSC, IA32_SYSENTER_CS} <= set(index_list)  # APIC_BASE travels in sregs
    vcpu.set_msrs({IA32_SYSENTER_CS: 0x10})
    values = vcpu.get_msrs([IA32_SYSENTER_CS, IA32_APIC_BASE])
    assert values[IA32_SYSENTER_CS] == 0x10 and values[IA32_APIC_BASE] & 0xFFFFF000 == 0xFEE00000
    with pytest.raises(MsrAccessError) as err:
        vcpu.get_msrs([IA32_SYSENTER_CS, NO_SUCH_MSR, IA32_TSC])
    assert err.value.index == NO_SUCH_MSR and err.value.completed == {IA32_SYSENTER_CS: 0x10}
    assert str(err.value) == "KVM_GET_MSRS: MSR 0xdeadbeef refused after 1 of 3 MSRs"
    with pytest.raises(MsrAccessError) as err:
        vcpu.set_msrs({IA32_SYSENTER_CS: 0x8, NO_SUCH_MSR: 1})
    assert err.value.completed == {IA32_SYSENTER_CS: 0x8}
    assert vcpu.get_msrs([IA32_SYSENTER_CS]) == {IA32_SYSENTER_CS: 0x8}  # the write before it took effect


def test_feature_msrs(system):
    features = system.msr_feature_index_list()
    assert features and set(system.get_feature_msrs(features)) == set(features)
    with pytest.raises(MsrAccessError, match="MSR 0xdeadbeef refused after 1 of 2"):
        system.get_feature_msrs([features[0], NO_SUCH_MSR])


def test_cpuid_tables(system, machine):
    vm, vcpu, _ = machine
    supported = system.supported_cpuid()
    assert system.check_extension(Cap.EXT_CPUID) and len(supported) > 30
    assert supported[0].function == 0 and supported[0].eax >= 0xD
    assert vcpu.get_cpuid2() == []  # nothing set yet: every leaf reads 0
    vcpu.set_cpuid2(supported)
    table = vcpu.get_cpuid2()
    # kvm_pvm drops empty leaves and adds host bits (XSAVE, AVX...): see docs/kvm.md
    assert {(e.function, e.index) for e in table} <= {(e.function, e.index) for e in supported}
    assert table[0] == supported[0]
    with pytest.raises(KvmError, match=r"KVM_SET_CPUID2: E2BIG .*nent=300"):
        vcpu.set_cpuid2([CpuidEntry(function=n) for n in range(300)])


def test_mmu_pages(machine):
    vm, _, _ = machine
    vm.set_nr_mmu_pages(64)
    with pytest.raises(KvmError, match=r"KVM_SET_NR_MMU_PAGES: EINVAL .*pages=10"):
        vm.set_nr_mmu_pages(10)  # below KVM_MIN_ALLOC_MMU_PAGES
    with pytest.raises(KvmError, match="KVM_GET_NR_MMU_PAGES: ENOTTY"):
        vm.get_nr_mmu_pages()  # removed from Linux (5.x): the header still names it
