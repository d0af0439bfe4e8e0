"""kvmshim.cpuid: QEMU 7.2's qemu64 as a CPUID table on KVM's, ``-cpu`` parsing, and a guest
that executes CPUID under the table and reports what it saw."""
from __future__ import annotations

import mmap
from pathlib import Path

import pytest

import guests
from kvm import CpuidEntry, ExitReason
from kvmshim.cpuid import CpuModelError, Topology, cpu_model_table, feature_name, parse_cpu_option
from test_kvm_binding import RAM_SIZE, host_addr, system  # noqa: F401 (fixture)

GUEST = Path(__file__).parent / "data" / "guests" / "cpuid-report.S"
LEAVES = [(0, 0), (1, 0), (7, 0), (0x40000000, 0), (0x40000001, 0), (0x80000000, 0), (0x80000001, 0),
          (0x80000002, 0), (0x80000003, 0), (0x80000008, 0)]
REGS = ("eax", "ebx", "ecx", "edx")
#: KVM_GET_SUPPORTED_CPUID of a host that offers everything: shows the model's own bits.
EVERYTHING = [CpuidEntry(f, i, eax=0xFFFFFFFF, ebx=0x756E6547, ecx=0x6C65746E, edx=0x49656E69)
              if f in (0, 0x80000000)
              else CpuidEntry(f, i, eax=0xFFFFFFFF, ebx=0xFFFFFFFF, ecx=0xFFFFFFFF, edx=0xFFFFFFFF)
              for f, i in LEAVES]


def regs(table, leaf, sub=0):
    entry = table.entry(leaf, sub)
    return tuple(getattr(entry, r) for r in REGS)


def test_qemu64_is_qemu_7_2s_model():
    table = cpu_model_table(EVERYTHING)
    assert regs(table, 0)[0] == 0xD and regs(table, 0x80000000)[0] == 0x8000000A
    assert regs(table, 1)[0] == 0x60FB1  # family 15, model 107, stepping 1
    assert regs(table, 1)[2:] == (0x80202001, 0x078BFBFD)  # pni cx16 x2apic hypervisor / PPRO+mtrr+...
    assert regs(table, 0x80000001)[2:] == (0x1, 0x20100800)  # lahf-lm (svm off under KVM) / syscall nx lm
    brand = b"".join(v.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003) for v in regs(table, leaf))
    assert brand.rstrip(b"\0") == b"QEMU Virtual CPU version 2.5+"
    assert table.missing == []


def test_topology_fields_follow_the_package():
    """-smp 4,cores=2,threads=2 seen by APIC ID 3: QEMU's encodings (tests/test_pc_qemu.py compares
    the whole guest view with QEMU 7.2's)."""
    table = cpu_model_table(EVERYTHING, "qemu64", 3, Topology(cores=2, threads=2))
    assert regs(table, 1)[1] >> 16 == 0x0304 and regs(table, 1)[3] >> 28 & 1  # APIC ID 3, 4 logical, HTT
    assert [regs(table, 4, n)[0] >> 14 for n in range(4)] == [0x1000, 0x1000, 0x1001, 0x1003]  # cores-1, sharing-1
    assert regs(table, 4, 4) == (0, 0, 0, 0)
    assert [regs(table, 0xB, n) for n in range(3)] == [(1, 2, 0x100, 3), (2, 4, 0x201, 3), (0, 0, 2, 3)]
    assert regs(table, 0x80000008)[2] == 0x2003
    single = cpu_model_table(EVERYTHING, "qemu64")
    assert regs(single, 1)[1] >> 16 == 0 and not regs(single, 1)[3] >> 28 & 1 and regs(single, 0x80000008)[2] == 0


def test_features_on_and_off_like_qemu():
    table = cpu_model_table(EVERYTHING, "qemu64,+popcnt,-nx,sse4_2=on,x2apic=off,+avx2,lm=off,+lm")
    ecx = regs(table, 1)[2]
    assert ecx >> 23 & 1 and ecx >> 20 & 1 and not ecx >> 21 & 1  # popcnt, sse4.2, no x2apic
    assert regs(table, 7)[1] == 1 << 5  # avx2
    assert regs(table, 0x80000001)[3] == 0x20000800  # no nx; +lm after lm=off
    assert "nx" not in parse_cpu_option("qemu64,+nx,-nx").features  # "-feat" wins, whatever the order
    assert "popcnt" in parse_cpu_option("qemu64,popcnt").features  # a bare name is "on"
    assert feature_name("sse3") == "pni" and feature_name("lahf_lm") == "lahf-lm" and feature_name("xd") == "nx"


def test_vendor_model_id_and_phys_bits_properties():
    def text(table, *leaves):
        return b"".join(v.to_bytes(4, "little") for leaf in leaves for v in regs(table, leaf)).rstrip(b"\0")

    for option in ("qemu64", "max"):
        table = cpu_model_table(EVERYTHING, f"{option},vendor=AuthenticAMD,model-id=Test CPU,phys-bits=46")
        for leaf in (0, 0x80000000):
            ebx, ecx, edx = regs(table, leaf)[1:]
            assert b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)) == b"AuthenticAMD"
        assert text(table, 0x80000002, 0x80000003) == b"Test CPU"
        assert regs(table, 0x80000008)[0] & 0xFF == 46
    assert regs(cpu_model_table(EVERYTHING, "qemu64"), 0x80000008)[0] == 0x3028  # 48 virtual, 40 physical
    host_bits = cpu_model_table(EVERYTHING, "qemu64,host-phys-bits")
    assert regs(host_bits, 0x80000008)[0] & 0xFF == 0xFF  # the host's (all ones in EVERYTHING)


@pytest.mark.parametrize("option, message", [
    ("qemu65", "unable to find CPU model 'qemu65' (known: qemu64, host, max)"),
    ("qemu64,+sse5", "unknown CPU feature 'sse5'"),
    ("qemu64,nx=yes", "a feature is 'on' or 'off', not 'yes'"),
    ("qemu64,vendor=Intel", "vendor=Intel: a vendor is 12 characters"),
    ("qemu64,phys-bits=64", "phys-bits=64: phys-bits is a number from 32 to 52"),
    ("qemu64,host-phys-bits=yes", "host-phys-bits=yes: expected 'on' or 'off'")])
def test_errors_name_the_model_or_feature(option, message):
    with pytest.raises(CpuModelError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        parse_cpu_option(option)


@pytest.mark.kvm
def test_features_kvm_lacks_are_dropped_with_qemus_warning(system):
    supported = system.supported_cpuid()
    table = cpu_model_table(supported, "qemu64,+vmx")
    sse3 = supported[1].ecx & 1  # kvm-here.md: this kernel's leaf 1 ECX lacks SSE3
    assert ("pni" in table.missing) == (not sse3) and "vmx" in table.missing
    assert "host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]" in table.warnings()
    assert regs(table, 0)[1:] == (supported[0].ebx, supported[0].ecx, supported[0].edx)  # KVM's vendor


@pytest.mark.kvm
def test_guest_sees_the_table(system):
    table = cpu_model_table(system.supported_cpuid(), "qemu64,+popcnt")
    spec, image = guests.spec(GUEST), guests.build(GUEST).read_bytes()
    ram = mmap.mmap(-1, RAM_SIZE)
    ram[spec.load_gpa:spec.load_gpa + len(image)] = image
    with system.create_vm() as vm:
        vm.set_user_memory_region(0, 0, RAM_SIZE, host_addr(ram))
        with vm.create_vcpu(0) as vcpu:
            vcpu.set_cpuid2(table.entries)
            effective = {(e.function, e.index): e for e in vcpu.get_cpuid2()}
            vcpu.set_real_mode(spec.cs, spec.ip, sp=spec.sp)
            words = []
            while vcpu.run() == ExitReason.IO and vcpu.exit_record().port == 0x600:
                words.extend(vcpu.exit_record().data)
            assert vcpu.exit_record().port == 0x501
    seen = {leaf: tuple(words[4 * n:4 * n + 4]) for n, leaf in enumerate(LEAVES)}
    for leaf in LEAVES:
        assert seen[leaf] == tuple(getattr(effective[leaf], r) for r in REGS), f"leaf {leaf[0]:#x}"
        ours = regs(table, *leaf)
        # The kernel may only add bits (kvm_pvm shows host bits it cannot hide), never drop ours.
        assert all(s & o == o for s, o in zip(seen[leaf], ours, strict=True)), f"leaf {leaf[0]:#x}"
    assert seen[(1, 0)][0] == 0x60FB1 and seen[(1, 0)][2] >> 23 & 1  # family/model/stepping, +popcnt
    assert seen[(0x80000001, 0)][3] == regs(table, 0x80000001)[3]


@pytest.mark.kvm
def test_host_and_max_are_kvms_table_with_each_vcpus_apic_id(system):
    supported = system.supported_cpuid()
    for option in ("host", "max"):
        table = cpu_model_table(supported, option, vcpu_index=3)
        assert [(e.function, e.index) for e in table.entries] == [(e.function, e.index) for e in supported]
        assert table.entry(1).ebx >> 24 == 3 and table.entry(1).ecx == supported[1].ecx
    assert not cpu_model_table(supported, "max,-x2apic").entry(1).ecx >> 21 & 1
    assert "vmx" in cpu_model_table(supported, "max,+vmx").missing
