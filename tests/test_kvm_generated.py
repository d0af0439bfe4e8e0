"""The enums generated from linux/kvm.h at build time, the features the header lacks, and typing."""
from __future__ import annotations

import enum
import inspect
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import kvm
from kvm import (
    Cap,
    ExitReason,
    InternalError,
    IoDirection,
    KvmError,
    KvmUnavailableError,
    MpState,
    SystemEventType,
    X86Quirk,
    _header,
    lib,
)
from test_kvm_binding import machine, system  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
BUILD = runpy.run_path(str(ROOT / "kvm" / "_build.py"))


def test_enums_are_static_classes_with_the_compilers_values():
    source = inspect.getsource(_header)
    assert "class Cap(enum.IntEnum):" in source and "class X86Quirk(enum.IntFlag):" in source
    for spec in BUILD["ENUMS"]:
        members = getattr(_header, spec.name).__members__
        assert members, spec.name
        for name, member in members.items():
            assert member == getattr(lib, spec.prefix + name), f"{spec.prefix}{name}"


def test_every_capability_of_the_header_is_named():
    caps = {name for name in BUILD["MACROS"] if name.startswith("KVM_CAP_")}
    assert caps == {f"KVM_CAP_{name}" for name in Cap.__members__}
    assert Cap.IRQFD == lib.KVM_CAP_IRQFD and Cap.X86_TRIPLE_FAULT_EVENT == 218


def test_field_values_are_not_members():
    assert "IO_IN" not in ExitReason.__members__ and IoDirection.OUT == lib.KVM_EXIT_IO_OUT
    assert "EMULATION_FLAG_INSTRUCTION_BYTES" not in InternalError.__members__
    assert Cap.IOEVENTFD_NO_LENGTH and Cap.PIT_STATE2  # caps keep names that extend others
    assert MpState.HALTED == lib.KVM_MP_STATE_HALTED and SystemEventType.RESET == lib.KVM_SYSTEM_EVENT_RESET
    assert issubclass(X86Quirk, enum.IntFlag) and X86Quirk.LINT0_REENABLED == 1


def test_ioctl_names_cover_this_architecture_only():
    names = set(kvm.IOCTL_NAMES)
    assert {"KVM_SET_CPUID2", "KVM_IRQ_LINE_STATUS", "KVM_GET_XSAVE2", "KVM_SET_GSI_ROUTING"} <= names
    assert "KVM_ARM_VCPU_INIT" not in names  # needs struct kvm_vcpu_init, which x86 lacks


@pytest.mark.kvm
def test_features_the_header_lacks_report_themselves(machine):
    vm, _, _ = machine
    for call, ioctl, have in ((lambda: vm.set_user_memory_region2(5, 0x100000, 0x1000, 0),
                               "KVM_SET_USER_MEMORY_REGION2", _header.HAVE_SET_USER_MEMORY_REGION2),
                              (lambda: vm.create_guest_memfd(0x1000), "KVM_CREATE_GUEST_MEMFD",
                               _header.HAVE_CREATE_GUEST_MEMFD)):
        if have:
            with pytest.raises(KvmError, match=ioctl):  # a default VM has no private memory
                call()
        else:
            with pytest.raises(KvmUnavailableError, match=f"{ioctl}: not declared by the linux/kvm.h"):
                call()


@pytest.mark.kvm
def test_disable_quirks(machine):
    vm, _, _ = machine
    assert vm.check_extension(Cap.DISABLE_QUIRKS2) & X86Quirk.LINT0_REENABLED
    vm.disable_quirks("LINT0_REENABLED", X86Quirk.CD_NW_CLEARED, "kvm_x86_quirk_out_7e_inc_rip")
    with pytest.raises(ValueError, match=r"no quirk 'LINT0' in linux/kvm.h \(known: LINT0_REENABLED, "):
        vm.disable_quirks("LINT0")
    with pytest.raises(KvmError, match=r"KVM_ENABLE_CAP: EINVAL .*cap=DISABLE_QUIRKS2 args=\[2147483648\]"):
        vm.enable_cap(Cap.DISABLE_QUIRKS2, 1 << 31)


def test_mypy_strict_is_clean_on_kvm():
    pytest.importorskip("mypy", reason="mypy is not installed (the [test] extra should bring it)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "kvm"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any("type: ignore" in p.read_text() for p in (ROOT / "kvm").glob("*.py"))


def test_generated_files_are_build_products_not_sources():
    for name in ("_header.py", "_kvm_cffi.pyi"):
        assert (ROOT / "kvm" / name).exists(), f"kvm/{name}: run `pip install -e .` (make install)"
        ignored = subprocess.run(["git", "check-ignore", "-q", f"kvm/{name}"], cwd=ROOT)
        assert ignored.returncode == 0, f"kvm/{name} must be gitignored"
