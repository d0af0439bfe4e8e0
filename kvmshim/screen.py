"""Showing a VGA text Screen: ANSI redraws in a terminal, and a PNG screenshot.

``TerminalScreen.poll()`` redraws only when ``VgaText.refresh()`` reports a change (a
dirty page of the text buffer, or new cursor/palette registers), so an idle guest costs
one empty dirty bitmap per poll. The screenshot draws the frame as a VGA shows mode 3:
720x400 pixels, 9x16 cells, the guest's 16 colours and cursor, in DejaVu Sans Mono
(matplotlib's own copy), with matplotlib's Agg renderer.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TextIO

from .pc.vga import COLS, ROWS, Screen, VgaText, glyph
from .plots import matplotlib

CELL_WIDTH, CELL_HEIGHT = 9, 16
WIDTH, HEIGHT = COLS * CELL_WIDTH, ROWS * CELL_HEIGHT  # 720 x 400, mode 3's resolution
DPI = 100
POLL_INTERVAL = 0.05  # seconds between a live screen's dirty-page checks
MONO_FONT = "DejaVu Sans Mono"
MONO_ADVANCE = 1233 / 2048  # DejaVu Sans Mono's advance width per em: fits the font size to 9-pixel cells
_ANSI = (0, 4, 2, 6, 1, 5, 3, 7)  # VGA colour (IRGB, I clear) -> ANSI colour


def render_ansi(screen: Screen) -> str:
    """The frame as ANSI text: 25 lines of 16-colour cells, colours by attribute as a VGA's default palette."""
    lines = []
    for row in range(ROWS):
        cells, last = [], None
        for col in range(COLS):
            attr = screen.attrs[row * COLS + col]
            fg, bg = attr & 0xF, attr >> 4
            if (fg, bg) != last:
                fg_code, bg_code = (90 if fg & 8 else 30) + _ANSI[fg & 7], (100 if bg & 8 else 40) + _ANSI[bg & 7]
                cells.append(f"\x1b[{fg_code};{bg_code}m")
                last = (fg, bg)
            cells.append(glyph(screen.chars[row * COLS + col]))
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


class TerminalScreen:
    """Draws a VgaText's frames on an ANSI terminal at ``top`` (1-based row); ``redraws`` counts them."""

    def __init__(self, vga: VgaText, out: TextIO, top: int = 1) -> None:
        self.vga, self.out, self.top = vga, out, top
        self.redraws = 0

    def poll(self) -> bool:
        """Redraw if the screen changed since the last poll; returns whether it did."""
        screen = self.vga.refresh()
        if screen is not None:
            self.draw(screen)
        return screen is not None

    def draw(self, screen: Screen) -> None:
        """Write the frame and put the terminal's cursor where the guest's is (hidden when it is)."""
        cursor = "\x1b[?25l"
        if screen.cursor is not None:
            cursor = f"\x1b[{self.top + screen.cursor[0]};{screen.cursor[1] + 1}H\x1b[?25h"
        self.out.write(f"\x1b[{self.top};1H{render_ansi(screen)}{cursor}")
        self.out.flush()
        self.redraws += 1

    def __enter__(self) -> TerminalScreen:
        """Poll every ``POLL_INTERVAL`` seconds in a thread of its own until the block ends."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="text-screen", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.poll()  # the last frame

    def _poll_loop(self) -> None:
        while not self._stopping.wait(POLL_INTERVAL):
            self.poll()


def write_screenshot(screen: Screen, path: str | Path) -> None:
    """A 720x400 PNG of the frame, as a VGA in mode 3 would show it (no blinking)."""
    import numpy as np

    mpl = matplotlib()
    figure = mpl.Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    mpl.FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    palette = np.array(screen.palette, dtype=np.uint8)
    attrs = np.frombuffer(screen.attrs, dtype=np.uint8).reshape(ROWS, COLS)
    ax.imshow(palette[attrs >> 4], extent=(0, COLS, ROWS, 0), interpolation="nearest", aspect="auto")
    size = CELL_WIDTH / MONO_ADVANCE * 72 / DPI
    for row in range(ROWS):
        col = 0
        while col < COLS:  # one text per run of cells with the same foreground colour
            fg = attrs[row, col] & 0xF
            end = col
            while end < COLS and attrs[row, end] & 0xF == fg:
                end += 1
            text = "".join(glyph(c) for c in screen.chars[row * COLS + col:row * COLS + end])
            if text.strip():
                ax.text(col, row + 0.5, text, color=palette[fg] / 255, fontfamily=MONO_FONT, fontsize=size,
                        va="center_baseline", ha="left")
            col = end
    if screen.cursor is not None:
        row, col = screen.cursor
        top, bottom = screen.cursor_lines
        colour = palette[attrs[row, col] & 0xF] / 255
        ax.add_patch(mpl.Rectangle((col, row + top / CELL_HEIGHT), 1, (bottom - top + 1) / CELL_HEIGHT,
                                   color=colour, linewidth=0))
    ax.set_xlim(0, COLS)
    ax.set_ylim(ROWS, 0)
    figure.savefig(path, dpi=DPI, format="png")
