"""`kvmshim dirty-demo [GUEST] [--interval MS] [--seconds N] [--png FILE]`: watch a guest dirty memory.

The guest runs in a vCPU thread and reads the tick port for each tick, so the
host sets its pace. Every interval the demo takes the MIGRATION bits of all RAM
(global dirty tracking for a dirty rate) for the statistics and the heatmap,
and the VGA bits of the text screen at 0xb8000: the screen is redrawn only when
its page was dirtied, the way QEMU's VGA uses dirty logging.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

from . import parse_size, positive

TEXT_GPA, TEXT_SIZE, COLS, ROWS = 0xB8000, 0x8000, 80, 25
PAGE = 4096
LOG_MODES = {"clear": {}, "get": {"manual_protect": False}, "ring": {"dirty_ring": 1 << 16}}
CLEAN, DIRTY, SCREEN_DIRTY = b"\x14\x14\x28", b"\xff\xd2\x28", b"\x50\xc8\xff"
_ANSI = (0, 4, 2, 6, 1, 5, 3, 7)  # VGA colour index -> ANSI colour index
_SPARK = " ▁▂▃▄▅▆▇█"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("dirty-demo", help="run a guest and show, live, the pages it dirties")
    p.add_argument("guest", nargs="?", default="screen",
                   help="screen (a text-mode counter, default), sweeper, or a .S path")
    p.add_argument("--interval", type=positive(), default=100.0, metavar="MS", help="fetch period (default 100)")
    p.add_argument("--seconds", type=positive(), default=None, metavar="N", help="stop after N s (default: Ctrl-C)")
    p.add_argument("--png", type=Path, metavar="FILE", help="at the end, write a heatmap: a row per page, "
                                                           "a column per interval")
    p.add_argument("-m", "--ram", type=parse_size, default=parse_size("2M"), help="RAM size (default 2M)")
    p.add_argument("--tick", type=positive(), default=20.0, metavar="MS", help="guest tick period (default 20)")
    p.add_argument("--log-mode", choices=tuple(LOG_MODES), default="clear",
                   help="clear: GET + CLEAR (manual protect), get: plain GET, ring: the dirty ring")
    sweep = p.add_argument_group("sweeper")
    sweep.add_argument("--first", type=lambda t: int(t, 0), default=0x100, help="first page (default 0x100)")
    sweep.add_argument("--count", type=positive(int), default=256, help="pages swept (default 256)")
    sweep.add_argument("--per-tick", type=positive(int), default=8, help="pages written per tick (default 8)")
    sweep.add_argument("--pattern", choices=("sequential", "random"), default="sequential")
    sweep.add_argument("--stride", type=positive(int), default=1, help="step of the sequential pattern (default 1)")
    return p


def render_text_screen(data: bytes) -> str:
    """ANSI rendering of an 80x25 VGA text buffer (character, attribute pairs)."""
    lines = []
    for row in range(ROWS):
        cells = []
        for col in range(COLS):
            char, attr = data[2 * (row * COLS + col)], data[2 * (row * COLS + col) + 1]
            fg = (90 if attr & 8 else 30) + _ANSI[attr & 7]
            text = bytes((char or 0x20,)).decode("cp437")
            cells.append(f"\x1b[{fg};{40 + _ANSI[attr >> 4 & 7]}m{text}")
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


class DirtyDemo:
    """One machine, its guest in a vCPU thread, and the per-interval dirty-page record."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        from memapi import MemoryRegion

        from ..machine import Machine
        from ..tick import TICK_PORT, TickPort

        self.args, self.out = args, out
        self.live = out.isatty()
        self.machine = m = Machine(args.ram, **LOG_MODES[args.log_mode])
        self.text = MemoryRegion.ram("vga.text", TEXT_SIZE)
        m.system.add_subregion_overlap(TEXT_GPA, self.text, 1)
        self.port = TickPort(self._tick)
        m.io.add_subregion(TICK_PORT, self.port.region)
        spec = m.load(args.guest)
        if spec.name == "sweeper":
            m.set_params(args.guest, FIRST=args.first, COUNT=args.count, PER_TICK=args.per_tick,
                         PATTERN=int(args.pattern == "random"), STRIDE=args.stride, SCREEN=TEXT_GPA)
        self.stopping = threading.Event()
        self._next_tick = time.monotonic()
        self.columns: list[tuple[list[int], bool]] = []  # (pages dirtied, screen redrawn) per interval
        self.distinct: set[int] = set()

    def close(self) -> None:
        self.machine.close()
        self.text.ram_block.close()

    def _tick(self) -> int:
        """Tick port handler (vCPU thread): wait for the next tick; 0 ends the guest."""
        if self.stopping.is_set():
            return 0
        self._next_tick = max(self._next_tick + self.args.tick / 1000, time.monotonic() - 0.1)
        delay = self._next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return self.port.ticks

    def run(self) -> bool:
        """Run until --seconds, the guest's end or Ctrl-C; returns whether Ctrl-C ended it."""
        from memapi import GlobalDirty

        interval, seconds = self.args.interval / 1000, self.args.seconds
        self.text.set_log(True)
        self.machine.memory_system.global_dirty_log_start(GlobalDirty.DIRTY_RATE)
        thread = self.machine.start()
        self.started = start = time.monotonic()
        interrupted = False
        try:
            while (seconds is None or time.monotonic() - start < seconds) and thread.is_alive():
                time.sleep(max(0.0, start + (len(self.columns) + 1) * interval - time.monotonic()))
                self._sample()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.stopping.set()
            thread.join(1)
            if thread.is_alive():
                thread.stop()
            self.machine.memory_system.global_dirty_log_stop(GlobalDirty.DIRTY_RATE)
            self.text.set_log(False)
        return interrupted

    def _sample(self) -> None:
        import memapi
        from memapi import DirtyClient

        pages = memapi.snapshot_and_clear_dirty(self.machine.ram, 0, self.machine.ram.size,
                                                DirtyClient.MIGRATION).dirty_pages()
        text = memapi.snapshot_and_clear_dirty(self.text, 0, TEXT_SIZE, DirtyClient.MIGRATION).dirty_pages()
        pages = sorted(set(pages) | {TEXT_GPA // PAGE + p for p in text})
        redraw = memapi.snapshot_and_clear_dirty(self.text, 0, 2 * COLS * ROWS, DirtyClient.VGA).dirty_count() > 0
        self.columns.append((pages, redraw))
        self.distinct.update(pages)
        if redraw and self.live:
            self.out.write("\x1b[H" + render_text_screen(self.text.ram_block.read(0, 2 * COLS * ROWS)))
        self._show_stats()

    def _stats(self) -> str:
        elapsed = time.monotonic() - self.started
        total = sum(len(pages) for pages, _ in self.columns)
        redraws = sum(redraw for _, redraw in self.columns)
        last = len(self.columns[-1][0]) if self.columns else 0
        return (f"t={elapsed:6.1f}s  intervals {len(self.columns)}  pages/interval {last:5d}  total {total}  "
                f"distinct {len(self.distinct)}  rate {total / max(elapsed, 1e-9):8.1f} pages/s  "
                f"screen redraws {redraws}")

    def _show_stats(self) -> None:
        if self.live:
            recent = [len(pages) for pages, _ in self.columns[-COLS:]]
            top = max(recent) or 1
            spark = "".join(_SPARK[round(n / top * 8)] for n in recent)
            self.out.write(f"\x1b[{ROWS + 2};1H\x1b[K{self._stats()}\n\x1b[K{spark}\n\x1b[KCtrl-C to stop")
            self.out.flush()
        elif len(self.columns) % max(1, round(1000 / self.args.interval)) == 0:
            print(self._stats(), file=self.out, flush=True)

    def heatmap_rows(self) -> list[bytes]:
        """One RGB row per guest page (address order), one pixel per interval."""
        npages = max(self.machine.ram.size, TEXT_GPA + TEXT_SIZE) // PAGE
        grid = [bytearray(CLEAN * len(self.columns)) for _ in range(npages)]
        text = range(TEXT_GPA // PAGE, (TEXT_GPA + TEXT_SIZE) // PAGE)
        for x, (pages, _) in enumerate(self.columns):
            for page in pages:
                grid[page][3 * x:3 * x + 3] = SCREEN_DIRTY if page in text else DIRTY
        return [bytes(row) for row in grid]

    def summary(self, png: Optional[Path]) -> str:
        line = f"dirty-demo: {self._stats()}"
        if png is not None:
            from ..png import write_png

            rows = self.heatmap_rows()
            write_png(png, rows, len(self.columns))
            line += f"\nheatmap {len(self.columns)}x{len(rows)} (intervals x pages) written to {png}"
        return line


def run(args) -> int:
    out = sys.stdout
    demo = DirtyDemo(args, out)
    try:
        if demo.live:
            out.write("\x1b[2J\x1b[H")
        interrupted = demo.run()
        if demo.live:
            out.write(f"\x1b[{ROWS + 5};1H")
        print(("interrupted\n" if interrupted else "") + demo.summary(args.png), file=out, flush=True)
    finally:
        demo.close()
    return 0
