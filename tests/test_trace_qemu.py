"""`kvmshim trace` on another KVM program: QEMU booting our bios guest (skipped without QEMU)."""
from __future__ import annotations

import shutil

import pytest

import guests
from kvm_helpers import requires_kvm
from kvmshim.trace import Summary, trace

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = [requires_kvm, pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")]
MiB = 1 << 20


def qemu_command(bios: str) -> list[str]:
    """QEMU's pc with 512 MiB running *bios*, which prints on COM1 and exits through isa-debug-exit."""
    return [QEMU, "-accel", "kvm", "-M", "pc", "-m", "512", "-display", "none", "-serial", "null",
            "-bios", bios, "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-no-reboot"]


def test_qemu_boot_is_decoded():
    result = trace(qemu_command(str(guests.build("bios"))), timeout=60)
    events = result.events
    assert result.returncode == 1  # isa-debug-exit: (0 << 1) | 1
    create_vm = next(e for e in events if e.request == "KVM_CREATE_VM")
    assert create_vm.kind == "kvm" and create_vm.result >= 0
    create_vcpu = next(e for e in events if e.request == "KVM_CREATE_VCPU")
    assert create_vcpu.pid != result.events[0].pid and create_vcpu.fd == create_vm.result  # QEMU's vCPU thread

    regions = [e.arg for e in events if e.request == "KVM_SET_USER_MEMORY_REGION"]
    assert regions[0] == {**regions[0], "slot": 0, "guest_phys_addr": 0, "memory_size": 512 * MiB, "flags": "0"}
    assert all(isinstance(e.arg, dict) for e in events if e.request == "KVM_IOEVENTFD")
    slots = {(s.guest_phys_addr, s.memory_size, s.flags) for s in Summary.of(events).memslots[0]}
    assert {(0, 0xA0000, "0"), (0xFFFF0000, 0x10000, "READONLY"), (0x100000, 512 * MiB - 0x100000, "0")} <= slots

    runs = [e for e in events if e.request == "KVM_RUN" and e.exit is not None]
    assert all(e.pid == create_vcpu.pid for e in runs)
    serial = bytes(e.exit["data"][0] for e in runs if e.exit["reason"] == "IO" and e.exit["port"] == 0x3F8)
    assert serial == b"bios ok\n"
    assert runs[-1].exit == {"reason": "IO", "direction": "OUT", "port": 0x501, "size": 1, "count": 1, "data": [0]}
