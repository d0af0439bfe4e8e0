"""`kvmshim trace` on another KVM program: QEMU booting our bios guest, and SeaBIOS."""
from __future__ import annotations

import re
import shutil

import pytest

import guests
from kvm import Kvm, lib
from kvmshim.cpuid import cpu_model_table
from kvmshim.trace import Summary, Tracer, format_event, trace
from kvmshim.trace.decode import Hex
from kvmshim.trace.requests import ioc_size

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.kvm  # and QEMU 7.2, which make test installs
MiB = 1 << 20


def request_number(name: str) -> int:
    return getattr(lib, name)


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


SEABIOS = "/usr/share/seabios/bios-256k.bin"  # QEMU's default BIOS on Debian
DEBUGCON = 0x402  # SeaBIOS's debug port


def test_qemu_seabios_boot_is_decoded_by_name(tmp_path):
    """QEMU 7.2's pc with SeaBIOS, traced until SeaBIOS says "No bootable device": every ioctl
    by name, every struct decoded, every capability by name."""
    log = bytearray()
    tracer = Tracer(keep_events=True)

    def watch(event):
        if event.exit and event.exit["reason"] == "IO" and event.exit["port"] == DEBUGCON and "data" in event.exit:
            log.extend(event.exit["data"])
            if b"No bootable device" in log:
                tracer.stop()

    tracer.on_event = watch
    command = [QEMU, "-accel", "kvm", "-M", "pc", "-m", "128", "-nodefaults", "-display", "none", "-serial", "none",
               "-bios", SEABIOS, "-chardev", f"file,id=dbg,path={tmp_path / 'debugcon'}",
               "-device", f"isa-debugcon,iobase={DEBUGCON:#x},chardev=dbg"]
    result = tracer.run(command, timeout=120)
    assert b"No bootable device" in log and not result.timed_out
    lines = [format_event(e, tracer.main_pid) for e in result.events]
    undecoded = [line for line, e in zip(lines, result.events, strict=True) if e.request.startswith("_IOC(")
                 or (ioc_size(request_number(e.request)) and isinstance(e.arg, Hex))]
    assert undecoded == [] and not any("_IOC(" in line for line in lines)
    numeric_caps = [line for line in lines if re.search(r"KVM_CHECK_EXTENSION, \d|[{ ]cap=\d", line)]
    assert numeric_caps == []
    requests = {e.request for e in result.events}
    assert {"KVM_SET_CPUID2", "KVM_SET_MSRS", "KVM_SET_GSI_ROUTING", "KVM_IRQ_LINE_STATUS", "KVM_SET_XSAVE",
            "KVM_SET_XCRS", "KVM_SET_LAPIC", "KVM_SET_PIT2", "KVM_GET_CLOCK", "KVM_SET_VCPU_EVENTS"} <= requests
    cpuid = next(e.arg for e in result.events if e.request == "KVM_SET_CPUID2")
    assert len(cpuid["entries"]) == cpuid["nent"] and cpuid["entries"][0]["function"] == 0x40000000
    status = next(e.arg for e in result.events if e.request == "KVM_IRQ_LINE_STATUS")
    assert set(status) == {"irq", "level", "status"}
    # kvmshim.cpuid builds the same qemu64 leaves QEMU passed to KVM_SET_CPUID2
    ours = cpu_model_table(Kvm().supported_cpuid())
    theirs = {(e["function"], e["index"]): e for e in cpuid["entries"]}
    for entry in ours.entries:
        if (entry.function, entry.index) in theirs:
            qemu = theirs[(entry.function, entry.index)]
            assert all(getattr(entry, r) == qemu[r] for r in ("eax", "ebx", "ecx", "edx")), hex(entry.function)
