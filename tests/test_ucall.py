"""Guest calls (kvmshim.ucall) from GNU as and NASM guests, in real mode and 32-bit protected mode,
on real KVM; a failed ASSERT reported with the guest's file and line; the host-side decoding."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import guests
from kvmshim import loader
from kvmshim.machine import BareMachine, Machine
from kvmshim.ucall import (
    AssertFailed,
    BadCall,
    Done,
    GuestAssertionError,
    Print,
    Stopped,
    Sync,
    UcallDevice,
    UcallError,
    printf,
    register,
    run_until_call,
    run_until_done,
)

DATA = Path(__file__).parent / "data" / "guests"
CALLS = [Sync(1), Sync(2, (7, 0x1234)), Print("real mode: bx=7 cx=0x1234\n"), Sync(3, (7,)),
         Print("protected mode: 7%\n"), Done()]


def machine_with_ucall(guest: Path | str) -> tuple[Machine, UcallDevice]:
    m = Machine()
    device = UcallDevice(m.stop)
    device.map(m.io)
    loader.load(m, guest)
    return m, device


@pytest.mark.kvm
@pytest.mark.parametrize("guest", ["ucall-gas.S", "ucall-nasm.asm"])
def test_calls_from_real_and_protected_mode(guest):
    m, device = machine_with_ucall(DATA / guest)
    with m:
        assert [run_until_call(m, 30, device) for _ in CALLS] == CALLS
        assert m.exit_status == 0  # stopped at DONE, before the EXIT after it


@pytest.mark.kvm
def test_run_until_done_collects_the_calls():
    m, device = machine_with_ucall(DATA / "ucall-gas.S")
    printed = []
    with m:
        assert run_until_done(m, 30, device, on_print=printed.append) == CALLS[:-1]
    assert printed == ["real mode: bx=7 cx=0x1234\n", "protected mode: 7%\n"]


@pytest.mark.kvm
@pytest.mark.parametrize("guest, line, message", [("ucall-fail.S", 9, "eax is 41, not 42"),
                                                  ("ucall-fail.asm", 8, "al is 3")])
def test_a_failed_assert_names_the_guest_file_and_line(guest, line, message):
    source = (DATA / guest).resolve()
    m, device = machine_with_ucall(source)
    with m, pytest.raises(GuestAssertionError) as err:
        run_until_done(m, 30, device)
    assert err.value.failed == AssertFailed(str(source), line, message)
    assert str(err.value) == f"{source}:{line}: guest assertion failed: {message}"


@pytest.mark.kvm
def test_a_guest_that_stops_without_a_call(tmp_path):
    src = tmp_path / "quiet.S"
    src.write_text('#include "ucall.inc"\n.include "common.inc"\n.code16\n.globl _start\n_start:\n'
                   "    SYNC 5\n    EXIT 3\n")
    m, device = machine_with_ucall(src)
    with m:
        assert run_until_call(m, 30, device) == Sync(5)
        stopped = run_until_call(m, 30, device)
        assert isinstance(stopped, Stopped) and stopped.exit_status == 3
    m, device = machine_with_ucall(src)
    with m, pytest.raises(UcallError, match="did not reach DONE"):
        run_until_done(m, 30, device)


@pytest.mark.kvm
def test_an_out_without_a_record_is_a_bad_call_not_a_host_error(tmp_path):
    src = tmp_path / "stray.S"
    src.write_text(".code16\n.globl _start\n_start:\n    outb %al, $0x99\n    hlt\n")
    m, device = machine_with_ucall(src)
    with m:
        call = run_until_call(m, 30, device)
        assert isinstance(call, BadCall) and "jump over a ucall record" in call.reason and call.address == 0x1000


@pytest.mark.kvm
def test_a_machine_without_a_ucall_device_needs_one_passed():
    with BareMachine() as m, pytest.raises(UcallError, match="has no ucall device: pass one as device"):
        run_until_call(m, 30)


def test_assert_without_the_preprocessor_stops_the_build(tmp_path):
    src = tmp_path / "plain.s"
    src.write_text('.include "ucall.inc"\n.code16\n.globl _start\n_start:\n    ASSERT e, "x"\n')
    with pytest.raises(guests.GuestBuildError, match="ASSERT needs the C preprocessor"):
        guests.build(src)


def test_printf_conversions():
    strings = {0x10: "text"}
    assert printf("%d %i %u", [0xFFFFFFFF, 5, 0xFFFFFFFF], strings.get) == "-1 5 4294967295"
    assert printf("%x %X %#x %08x %o", [255, 255, 255, 255, 8], strings.get) == "ff FF 0xff 000000ff 10"
    assert printf("%hd %hhu %ld", [0xFFFF, 0x1FF, 1 << 40], strings.get) == f"-1 255 {1 << 40}"
    assert printf("%c%s%% %-4d|", [ord("A"), 0x10, 7], strings.get) == "Atext% 7   |"
    assert printf("%d %d", [1], strings.get) == "1 <missing %d>"


def test_register_names():
    regs = SimpleNamespace(rax=0x1122334455667788, rbx=0xAABB, rcx=0, rdx=0, rsp=0, rbp=0, rsi=0, rdi=0, r9=-1 & 0xFFFF)
    assert [register(regs, n) for n in ("%rax", "eax", "ax", "al", "ah", "%bx", "bh", "r9w", "r9b")] == [
        0x1122334455667788, 0x55667788, 0x7788, 0x88, 0x77, 0xAABB, 0xAA, 0xFFFF, 0xFF]
    with pytest.raises(ValueError, match="unknown register 'xmm0'"):
        register(regs, "xmm0")
