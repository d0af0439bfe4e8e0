"""kvmshim's pytest plugin as its users meet it: docs/testing.md's test file copied to a directory
outside tests/ and run by plain pytest (the venv's python, a subprocess); a failing guest ASSERT,
a leaked fd, the markers' skips; and the inline guests of guest_asm."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import guests
from kvmshim.pytest_plugin import kvm_unavailable, write_guest
from kvmshim.ucall import Done, Sync

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"

MARKERS_AND_FAILURES = '''
import pytest

LEAKED = []


def test_a_failed_guest_assert(kvm_machine, guest_asm):
    kvm_machine.load(guest_asm("""
    mov $41, %eax
    cmp $42, %eax
    ASSERT e, "eax is %d, not 42", %eax
    DONE
"""))
    kvm_machine.run_until_done(timeout=10)


def test_a_leaked_vm(kvm_machine):
    LEAKED.append(kvm_machine.kvm.create_vm())


@pytest.mark.requires_cap("IRQFD", "KVM_CAP_ARM_PSCI")
def test_an_arm_capability():
    pass


@pytest.mark.requires_cap("IRQFD", "KVM_CAP_IOEVENTFD")
def test_offered_capabilities():
    pass


@pytest.mark.kvm
def test_kvm_marker():
    pass
'''


def user_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """Plain pytest, from the directory, as a user of the installed kvmshim runs it."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=directory,
                          capture_output=True, text=True, timeout=300)


def test_the_user_test_file_of_the_docs_passes_under_plain_pytest(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)[1]
    project = tmp_path / "my-vmm"
    project.mkdir()
    (project / "test_my_device.py").write_text(code)
    done = user_pytest(project, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^6 passed in ", done.stdout, re.M), done.stdout


@pytest.mark.kvm
def test_failures_name_the_guest_line_and_the_leaked_fd_and_skips_say_why(tmp_path):
    (tmp_path / "test_user.py").write_text(MARKERS_AND_FAILURES)
    done = user_pytest(tmp_path, "-q", "-rs")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert re.search(r"^1 failed, 3 passed, 1 skipped, 1 error in ", out, re.M), out
    assert re.search(r"E +kvmshim.ucall.GuestAssertionError: \S+/guest1.S:3: guest assertion failed: eax is 41, "
                     r"not 42", out), out
    section = out[out.index(" guest assertion "):]
    assert re.search(r"guest1.S:3\n  1 \|     mov \$41, %eax\n  2 \|     cmp \$42, %eax\n> 3 \|     ASSERT e, ",
                     section)
    assert re.search(r"ERROR at teardown of test_a_leaked_vm.*the test left KVM fds open: \d+ -> anon_inode:kvm-vm",
                     out, re.S), out
    assert "SKIPPED [1] test_user.py:21: this kernel's KVM does not offer KVM_CAP_ARM_PSCI" in out


def test_an_unknown_capability_is_a_usage_error(tmp_path):
    (tmp_path / "test_typo.py").write_text('import pytest\n\n@pytest.mark.requires_cap("IRQ_FD")\n'
                                           'def test_typo():\n    pass\n')
    done = user_pytest(tmp_path, "-q")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "requires_cap: 'IRQ_FD' is not a KVM_CAP_* of linux/kvm.h" in done.stderr


def test_the_skip_reason_names_the_device_and_the_error(tmp_path):
    assert kvm_unavailable(str(tmp_path / "kvm")) == f"{tmp_path / 'kvm'} cannot be opened: No such file or directory"
    assert kvm_unavailable() == ""  # here: every kvm test runs


@pytest.mark.parametrize("syntax, kind, fmt", [
    ("gas", "flat", guests.Format.FLAT), ("gas", "boot", guests.Format.BOOT_SECTOR),
    ("gas", "pm32", guests.Format.FLAT), ("nasm", "flat", guests.Format.FLAT),
    ("nasm", "boot", guests.Format.BOOT_SECTOR), ("nasm", "pm32", guests.Format.FLAT)])
def test_inline_guests_of_each_syntax_and_kind(kvm_machine, guest_asm, syntax, kind, fmt):
    gas = "    mov $7, %ebx\n    SYNC 1, %ebx\n    PUTS msg\n    DONE\nmsg: .asciz \"hi\\n\"\n"
    nasm = "    mov ebx, 7\n    SYNC 1, ebx\n    PUTS msg\n    DONE\nmsg: db \"hi\", 10, 0\n"
    guest = guest_asm(gas if syntax == "gas" else nasm, syntax=syntax, kind=kind)
    loaded = kvm_machine.load(guest)
    assert loaded.plan.format is fmt
    assert [kvm_machine.run_until_call(10) for _ in range(2)] == [Sync(1, (7,)), Done()]
    assert bytes(kvm_machine.serial.output) == b"hi\n"
    if kind == "boot":
        image = guests.build(guest).read_bytes()
        assert len(image) == 512 and image[510:] == b"\x55\xaa"


@pytest.mark.parametrize("syntax, source, line", [
    ("gas", "    nop\n    movx %ax, %bx\n", ":2: Error: no such instruction: `movx %ax,%bx'"),
    ("nasm", "    nop\n    movx ax, bx\n", ":2: error: parser: instruction expected")])
def test_assembler_errors_count_lines_from_the_source(tmp_path, syntax, source, line):
    with pytest.raises(guests.GuestBuildError) as err:
        write_guest(tmp_path, "bad", source, syntax)
    assert line in str(err.value).splitlines()[0]


def test_guest_asm_names_its_choices(tmp_path):
    with pytest.raises(ValueError, match=r"guest_asm: kind 'real' \(flat, boot, pm32\)"):
        write_guest(tmp_path, "x", "nop", "gas", "real")
    with pytest.raises(ValueError, match=r"guest_asm: syntax 'masm' \(gas or nasm\)"):
        write_guest(tmp_path, "x", "nop", "masm")
