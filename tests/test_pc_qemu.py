"""`kvmshim qemu` boots real software, driven the way a user types QEMU's command line.

One GRUB boot per module (about a minute here, nearly all of it the CPU emulation of SeaBIOS and
GRUB under kvm_pvm): the disk image is built at test time from Debian's grub-pc-bin
(tests/grub_image.py), the command is QEMU's, the serial port is stdio, and the test types at
the menu and at ``grub>`` through the process's stdin as a user would at the terminal.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grub_image import MENU_READY, PROMPT, grub_image  # noqa: F401
from kvmshim.pc.ata import DiskImage
from test_pc_ide import locked

pytestmark = pytest.mark.kvm
GRUB_TIMEOUT = 300.0


class Session:
    """A `kvmshim qemu` process and the transcript of its stdout, read as it comes."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kvmshim.cli", "qemu", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.transcript = bytearray()
        self._grew = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            with self._grew:
                self.transcript += chunk
                self._grew.notify_all()

    def expect(self, text: bytes, after: int = 0, timeout: float = GRUB_TIMEOUT) -> int:
        """Wait until ``text`` appears at or after offset ``after``; its end offset."""
        deadline = time.monotonic() + timeout
        with self._grew:
            while (at := self.transcript.find(text, after)) < 0:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, (
                    f"no {text!r} after {timeout} s; transcript tail {bytes(self.transcript[-400:])!r}, "
                    f"stderr {self.proc.stderr.read() if self.proc.poll() is not None else b''!r}")
                self._grew.wait(min(left, 1.0))
            return at + len(text)

    def type(self, keys: bytes) -> None:
        self.proc.stdin.write(keys)
        self.proc.stdin.flush()

    def quit(self) -> int:
        """Ctrl-C, as at a terminal (plain ``-serial stdio`` has no Ctrl-A x, as in QEMU); the exit status."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(60)
        assert self.proc.stderr.read().endswith(b"kvmshim qemu: terminating on signal 2\n")
        return status


@pytest.fixture(scope="module")
def grub(grub_image):
    digest = hashlib.sha256(grub_image.read_bytes()).hexdigest()
    session = Session(["-M", "pc", "-m", "128", "-nodefaults", "-display", "none", "-serial", "stdio",
                       "-drive", f"file={grub_image},format=raw,if=ide", "-boot", "c"])
    yield session, grub_image, digest
    if session.proc.poll() is None:
        session.proc.kill()
        session.proc.wait(30)


def test_grub_menu_prompt_and_commands(grub):
    session, image, digest = grub
    menu = session.expect(b"kvmshim test entry", session.expect(MENU_READY))  # the entries come last
    assert b"GNU GRUB  version 2.06" in session.transcript
    session.type(b"c")
    prompt = session.expect(PROMPT, menu)
    session.type(b"echo hello from kvmshim\r")
    echoed = session.expect(b"\n\rhello from kvmshim\n", prompt)  # GRUB ends lines with LF CR
    session.expect(PROMPT, echoed)
    session.type(b"ls\r")
    listing = session.expect(b"(hd0)", echoed)
    prompt = session.expect(PROMPT, listing)
    session.type(b"cho typed after Ctrl-A\x01e\r")  # plain -serial stdio: Ctrl-A is GRUB's, line start
    session.expect(b"\n\rtyped after Ctrl-A\n", prompt)
    assert session.quit() == 0  # Ctrl-C: QEMU's "terminating on signal 2" and status
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest  # GRUB only read the disk


def test_unsupported_options_fail_in_one_line(tmp_path):
    for argv, needle in ((["-usb"], b"unsupported option '-usb'"), (["-m", "lots"], b"-m lots"),
                         (["-kernel", str(tmp_path / "missing")], b"could not open kernel file")):
        done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "qemu", "-nodefaults", *argv],
                              capture_output=True, timeout=60)
        assert done.returncode == 1 and needle in done.stderr and done.stderr.count(b"\n") == 1, done.stderr


def _qemu(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvmshim.cli", "qemu", "-nodefaults", "-display", "none", *argv],
                          capture_output=True, timeout=120)


def test_disks_and_fw_cfg_files_the_board_refuses_are_one_line(tmp_path):
    """A qcow2 -hda (QEMU would probe it; used raw it would be corrupted), a -hdb that does not open
    after a good -hda, and a -fw_cfg etc/e820 the machine has: one line each and status 1, as QEMU."""
    qcow2, good = tmp_path / "x.qcow2", tmp_path / "good.img"
    qcow2.write_bytes(b"QFI\xfb\0\0\0\3".ljust(65536, b"\0"))
    good.write_bytes(bytes(512 * 16))
    for argv, line in (
            (["-hda", str(qcow2)],
             f"kvmshim qemu: disk image '{qcow2}' is a qcow2 image; kvmshim reads raw images only"),
            (["-drive", f"file={good},format=raw", "-hdb", str(tmp_path / "none.img")],
             f"kvmshim qemu: Could not open '{tmp_path / 'none.img'}': No such file or directory"),
            (["-fw_cfg", "name=opt/a,string=1", "-fw_cfg", "name=etc/e820,string=x"],
             "kvmshim qemu: duplicate fw_cfg file name: etc/e820")):
        done = _qemu(*argv)
        assert done.returncode == 1 and done.stderr.decode().splitlines()[-1] == line, done.stderr
        assert b"Traceback" not in done.stderr
    assert qcow2.read_bytes()[:8] == b"QFI\xfb\0\0\0\3"


def test_a_raw_disk_without_format_gets_qemus_probe_warning(tmp_path):
    """-hda raw.img: QEMU 7.2's three-line warning, before the guest runs (here a kernel that faults at once)."""
    kernel = nasm_kernel(tmp_path, UNFETCHABLE)
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(512 * 16))
    done = _qemu("-cpu", "max", "-kernel", str(kernel), "-hda", str(raw))
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().splitlines()[:3] == [
        f"kvmshim qemu: warning: Image format was not specified for '{raw}' and probing guessed raw.",
        "         Automatically detecting the format is dangerous for raw images, write operations on block 0 "
        "will be restricted.",
        "         Specify the 'raw' format explicitly to remove the restrictions."]
    assert b"Image format" not in _qemu("-cpu", "max", "-kernel", str(kernel), "-drive",
                                        f"file={raw},format=raw").stderr


def multiboot_kernel(tmp_path: Path, name: str) -> Path:
    """tests/data/guests/NAME.S assembled and linked into an ELF32 multiboot kernel at 1 MiB."""
    obj, kernel = tmp_path / f"{name}.o", tmp_path / f"{name}.elf"
    subprocess.run(["as", "--32", "-o", str(obj), str(Path(__file__).parent / f"data/guests/{name}.S")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-N", "--no-warn-rwx-segments", "-Ttext=0x100000", "-o", str(kernel),
                    str(obj)], check=True)
    return kernel


def test_a_multiboot_kernel_starts_the_second_vcpu_and_exits_through_isa_debug_exit(tmp_path):
    """tests/data/guests/mb-smp.S, a GNU as ELF32 multiboot kernel run the way kvm-unit-tests runs
    theirs: -kernel with -append, -smp 2, pc-testdev and isa-debug-exit at 0xf4; the kernel checks
    each step itself (QEMU 7.2 prints the same two lines and exits 1 too)."""
    kernel = multiboot_kernel(tmp_path, "mb-smp")
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "qemu", "--no-reboot", "-nodefaults", "-display",
                           "none", "-serial", "stdio", "-smp", "2", "-device", "pc-testdev", "-device",
                           "isa-debug-exit,iobase=0xf4,iosize=0x4", "-kernel", str(kernel), "-append", "hello world"],
                          capture_output=True, timeout=120)
    assert done.stdout.splitlines() == [f"{kernel} hello world".encode(),
                                        b"mb-smp: fw_cfg says 2 CPUs, vCPU 1 started, pc-testdev ok"], done
    assert done.returncode == 1  # isa-debug-exit: (0 << 1) | 1, as QEMU exits


def nasm_kernel(tmp_path: Path, code: str) -> Path:
    """A flat multiboot kernel (address fields) at 1 MiB whose entry runs ``code`` (NASM)."""
    (tmp_path / "k.asm").write_text("bits 32\norg 0x100000\nheader:\n"
                                    "    dd 0x1BADB002, 0x00010003, -(0x1BADB002 + 0x00010003)\n"
                                    f"    dd header, header, image_end, image_end, start\nstart:\n{code}image_end:\n")
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "k.bin"), str(tmp_path / "k.asm")], check=True)
    return tmp_path / "k.bin"


UNFETCHABLE = """
    mov eax, 0xfe000000             ; no RAM or ROM there: KVM cannot fetch the next instruction
    jmp eax
"""


def test_a_guest_fault_is_one_line_and_status_2_from_the_console_script(tmp_path):
    """An emulation failure (KVM_EXIT_INTERNAL_ERROR) under `kvmshim-qemu`: no traceback; QEMU would
    stop the VM at its monitor, kvmshim has none and exits with a status no debug-exit can give
    (run_tests.sh would count 1, with only warnings on stderr, as a pass)."""
    kernel = nasm_kernel(tmp_path, UNFETCHABLE)
    done = subprocess.run([str(Path(sys.executable).parent / "kvmshim-qemu"), "-nodefaults", "-display", "none",
                           "-cpu", "max", "-kernel", str(kernel)], capture_output=True, timeout=60)
    assert done.returncode == 2 and b"Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(r"kvmshim qemu: KVM_EXIT_INTERNAL_ERROR \(suberror 1\) at cs:ip=00[0-9a-f]{2}:0xfe000000 "
                        r"\(linear 0xfe000000\) rax=0xfe000000 rflags=0x2; the guest is stopped\n",
                        done.stderr.decode()), done.stderr


SCREEN_SECTOR = r"""
bits 16
org 0x7c00
    xor ax, ax
    mov ds, ax
    mov si, text
.tty:                               ; int 10h teletype: SeaBIOS's sercon mirrors it on COM1
    lodsb
    test al, al
    jz .screen
    mov ah, 0x0e
    mov bx, 7
    int 0x10
    jmp .tty
.screen:                            ; and the same bytes straight into the VGA text buffer
    mov ax, 0xb800
    mov es, ax
    xor di, di
    mov si, text
.cell:
    lodsb
    cmp al, 13
    je .done
    mov ah, 0x2f
    stosw
    jmp .cell
.done:
    sti
    mov cx, 3                       ; three timer ticks: sercon sends its last character lazily
.tick:
    hlt
    loop .tick
    mov al, 0x21
    out 0x1, al                     ; placeholder, patched below to isa-debug-exit's port 0x501
    hlt
text: db "hello from a boot sector", 13, 10, 0
times 510 - ($ - $$) db 0
dw 0xaa55
""".replace("    out 0x1, al                     ; placeholder, patched below to isa-debug-exit's port 0x501",
            "    mov dx, 0x501\n    out dx, al")


def test_run_machine_pc_boots_a_disk_shows_its_screen_and_takes_its_status(tmp_path):
    """`kvmshim run --machine pc --disk`: the boot sector's int 10h text reaches the terminal (sercon),
    its video memory the screenshot, its isa-debug-exit write the exit status (0x21 << 1 | 1)."""
    (tmp_path / "boot.asm").write_text(SCREEN_SECTOR)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "boot.bin"), str(tmp_path / "boot.asm")], check=True)
    disk = tmp_path / "disk.img"
    disk.write_bytes((tmp_path / "boot.bin").read_bytes() + bytes(511 * 512))
    png = tmp_path / "screen.png"
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "run", "--machine", "pc", "--disk", f"{disk},readonly",
                           "--sercon", "--screenshot", str(png), "--timeout", "120"], capture_output=True, timeout=180)
    assert done.returncode == 0x43, done
    assert b"hello from a boot sector" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("smp", ["1", "2", "4,cores=2,threads=2", "4,sockets=2,cores=2", "6,cores=3,threads=2"])
def test_the_guest_sees_qemus_cpuid_for_each_topology(tmp_path, smp):
    """tests/data/guests/cpuid-mb.S prints leaves 0-2, 4 (every cache), 0xB, 0xD and 0x8000000x
    under QEMU 7.2 and under `kvmshim qemu`, same command line: the same bytes, topology included."""
    kernel = multiboot_kernel(tmp_path, "cpuid-mb")
    argv = ["-cpu", "qemu64", "-smp", smp, "-nodefaults", "-display", "none", "-serial", "stdio", "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", str(kernel)]
    qemu = subprocess.run(["qemu-system-x86_64", "-accel", "kvm", *argv], capture_output=True, timeout=60)
    ours = subprocess.run([str(Path(sys.executable).parent / "kvmshim-qemu"), *argv], capture_output=True, timeout=60)
    assert qemu.returncode == ours.returncode == 1 and qemu.stdout.count(b"\n") == 15
    assert ours.stdout == qemu.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_terminating_signal_ends_the_run_as_it_ends_qemus(tmp_path, signum):
    """QEMU's words and status 0, and the disk image closed: its lock is free again at once."""
    kernel = nasm_kernel(tmp_path, "    jmp start\n")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "kvmshim-qemu"), "-nodefaults", "-display", "none",
                             "-drive", f"file={disk},format=raw,if=ide", "-kernel", str(kernel)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not locked(disk):  # the image is locked once the machine is built
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err.endswith(f"kvmshim qemu: terminating on signal {int(signum)}\n".encode()), err
    DiskImage(disk).close()

