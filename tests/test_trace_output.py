"""Trace output discipline: whole lines in one write each, CR LF on a raw terminal, and a
Ctrl-C that reaches the traced command without python-ptrace noise."""
from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import tty

from kvmshim.trace import LineWriter


def test_lines_to_a_pipe_are_whole_and_end_in_lf():
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        writer = LineWriter(write_end)
        writer.line("ioctl(4<vm>, KVM_RUN, 0) = 0")
        writer.line("x" * 3000)
        os.close(write_end)
        assert pipe.read() == b"ioctl(4<vm>, KVM_RUN, 0) = 0\n" + b"x" * 3000 + b"\n"


def test_a_raw_terminal_gets_cr_lf():
    controller, terminal = pty.openpty()
    try:
        writer = LineWriter(terminal)
        writer.line("cooked")
        tty.setraw(terminal)  # what QEMU -serial stdio does to the terminal
        assert not termios.tcgetattr(terminal)[1] & termios.OPOST
        writer.line("raw")
        expected = b"cooked\r\nraw\r\n"  # ONLCR made the first CR LF
        received = b""
        while len(received) < len(expected) and select.select([controller], [], [], 10)[0]:
            received += os.read(controller, 100)  # the pty may hand the bytes over in pieces
        assert received == expected
    finally:
        os.close(controller)
        os.close(terminal)


def test_ctrl_c_reaches_the_command_and_the_trace_ends_quietly(tmp_path):
    program = "import time; print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-m", "kvmshim.cli", "trace", "-o", str(tmp_path / "t"), "--",
                             sys.executable, "-c", program],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline() == b"up\n"
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends the foreground group on Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert b"KeyboardInterrupt" in err  # the command's own reaction
    assert b"WARNING" not in err and b"Terminate" not in err and b"kvmshim" not in err
