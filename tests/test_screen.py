"""Showing the VGA text screen: ANSI redraws only on change, and the PNG screenshot (no KVM)."""
from __future__ import annotations

import io
import struct

import pytest

from kvmshim.screen import HEIGHT, WIDTH, TerminalScreen, render_ansi, write_screenshot
from test_vga_text import Board


@pytest.fixture
def board():
    b = Board()
    yield b
    b.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_ansi_rendering(board: Board):
    board.put(0, 0, "A", 0x1F)
    board.put(0, 1, "B", 0xC2)
    text = render_ansi(board.vga.screen())
    assert text.startswith("\x1b[97;44mA\x1b[32;101mB\x1b[30;40m") and text.count("\n") == 24


def test_terminal_redraws_only_when_dirty(board: Board):
    out = io.StringIO()
    terminal = TerminalScreen(board.vga, out, top=3)
    assert terminal.poll() and terminal.redraws == 1
    for _ in range(3):
        assert not terminal.poll()
    board.put(5, 10, "tick")
    board.crtc(0x0F, 2)
    assert terminal.poll() and terminal.redraws == 2
    assert not terminal.poll() and terminal.redraws == 2
    assert out.getvalue().startswith("\x1b[3;1H") and out.getvalue().endswith("\x1b[3;3H\x1b[?25h")
    board.crtc(0x0A, 0x20)
    assert terminal.poll() and out.getvalue().endswith("\x1b[?25l")  # a hidden cursor hides the terminal's


def test_screenshot_is_a_720x400_png(board: Board, tmp_path):
    board.put(0, 0, "kvmshim ╔═╗ █▓▒░", 0x1E)
    board.put(24, 70, "bottom", 0x4F)
    path = tmp_path / "screen.png"
    write_screenshot(board.vga.screen(), path)
    assert png_size(path.read_bytes()) == (WIDTH, HEIGHT) == (720, 400)
