"""`kvmshim qemu` boots real software, driven the way a user types QEMU's command line.

One GRUB boot per module (about a minute here, nearly all of it the CPU emulation of SeaBIOS and
GRUB under kvm_pvm): the disk image is built at test time from Debian's grub-pc-bin
(tests/grub_image.py), the command is QEMU's, the serial port is stdio, and the test types at
the menu and at ``grub>`` through the process's stdin as a user would at the terminal.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grub_image import MENU_READY, PROMPT, grub_image  # noqa: F401
from kvm_helpers import requires_kvm

pytestmark = requires_kvm
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
        """Ctrl-A x, as at QEMU's stdio console; the exit status."""
        self.type(b"\x01x")
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def grub(grub_image):  # noqa: F811
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
    session.expect(PROMPT, listing)
    assert session.quit() == 0
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest  # GRUB only read the disk


def test_unsupported_options_fail_in_one_line(tmp_path):
    for argv, needle in ((["-usb"], b"unsupported option '-usb'"), (["-m", "lots"], b"-m lots"),
                         (["-kernel", str(tmp_path / "missing")], b"could not open kernel file")):
        done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "qemu", "-nodefaults", *argv],
                              capture_output=True, timeout=60)
        assert done.returncode == 1 and needle in done.stderr and done.stderr.count(b"\n") == 1, done.stderr
