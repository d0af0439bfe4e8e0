"""`kvmshim dirty-demo [GUEST] [--interval MS] [--seconds N] [--png FILE] [--screenshot FILE]`.

Watch a guest dirty memory. The guest runs in a vCPU thread and reads the tick
port for each tick, so the host sets its pace. Every interval the demo takes the
MIGRATION bits of all RAM (global dirty tracking for a dirty rate) for the
statistics and the heatmap, and the pc machine's VGA text screen (kvmshim.pc.vga)
takes its VGA bits: the screen is redrawn only when its page was dirtied, the way
QEMU's VGA uses dirty logging.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..pc.vga import COLS, ROWS, TEXT_BASE, TEXT_SIZE
from ..plots import bin_size, format_size
from . import parse_size, positive

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from . import Subparsers

PAGE = 4096
#: Machine keyword arguments per --log-mode.
LOG_MODES: dict[str, dict[str, Any]] = {"clear": {}, "get": {"manual_protect": False},
                                        "ring": {"dirty_ring": 1 << 16}}
#: Heatmap categories: index 0, 1, 2 of a cell.
CATEGORIES = (("clean", "#141428"), ("dirty", "#ffd228"), ("dirty text-screen page", "#50c8ff"))
_SPARK = " ▁▂▃▄▅▆▇█"


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p = sub.add_parser("dirty-demo", help="run a guest and show, live, the pages it dirties")
    p.add_argument("guest", nargs="?", default="screen",
                   help="screen (a text-mode counter, default), sweeper, or a .S path")
    p.add_argument("--interval", type=positive(), default=100.0, metavar="MS", help="fetch period (default 100)")
    p.add_argument("--seconds", type=positive(), default=None, metavar="N", help="stop after N s (default: Ctrl-C)")
    p.add_argument("--png", type=Path, metavar="FILE", help="at the end, write a heatmap of the dirty pages: "
                                                           "address against time")
    p.add_argument("--screenshot", type=Path, metavar="FILE", help="at the end, write a PNG of the text screen")
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


class DirtyDemo:
    """One machine, its guest in a vCPU thread, and the per-interval dirty-page record."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        from ..machine import Machine
        from ..pc.vga import VgaText
        from ..screen import TerminalScreen
        from ..tick import TICK_PORT, TickPort

        self.args, self.out = args, out
        self.live = out.isatty()
        self.machine = m = Machine(args.ram, **LOG_MODES[args.log_mode])
        self.vga = VgaText()
        self.vga.map(m.system, m.io)
        self.terminal = TerminalScreen(self.vga, out)
        self.port = TickPort(self._tick)
        m.io.add_subregion(TICK_PORT, self.port.region)
        spec = m.load(args.guest)
        if spec.name == "sweeper":
            m.set_params(args.guest, FIRST=args.first, COUNT=args.count, PER_TICK=args.per_tick,
                         PATTERN=int(args.pattern == "random"), STRIDE=args.stride, SCREEN=TEXT_BASE)
        self.guest = spec.name
        self.stopping = threading.Event()
        self._next_tick = time.monotonic()
        self.columns: list[tuple[list[int], bool]] = []  # (pages dirtied, screen redrawn) per interval
        self.distinct: set[int] = set()

    def close(self) -> None:
        self.machine.close()
        self.vga.close()

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
        return interrupted

    def _sample(self) -> None:
        import memapi
        from memapi import DirtyClient

        pages = memapi.snapshot_and_clear_dirty(self.machine.ram, 0, self.machine.ram.size,
                                                DirtyClient.MIGRATION).dirty_pages()
        text = memapi.snapshot_and_clear_dirty(self.vga.text, 0, TEXT_SIZE, DirtyClient.MIGRATION).dirty_pages()
        pages = sorted(set(pages) | {TEXT_BASE // PAGE + p for p in text})
        screen = self.vga.refresh()
        if screen is not None and self.live:
            self.terminal.draw(screen)
        self.columns.append((pages, screen is not None))
        self.distinct.update(pages)
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

    def heatmap_cells(self) -> tuple[NDArray[np.uint8], int]:
        """(cells, pages per row): one row per bin of pages (address order), one column per interval;
        a cell is 0 (clean), 1 (a page dirtied) or 2 (a text-screen page dirtied)."""
        import numpy as np

        npages = max(self.machine.ram.size, TEXT_BASE + TEXT_SIZE) // PAGE
        per_row = bin_size(npages)
        cells = np.zeros((-(-npages // per_row), len(self.columns)), dtype=np.uint8)
        screen = range(TEXT_BASE // PAGE, (TEXT_BASE + TEXT_SIZE) // PAGE)
        for x, (pages, _) in enumerate(self.columns):
            dirty = np.array(pages, dtype=np.int64)
            category = np.where((dirty >= screen.start) & (dirty < screen.stop), 2, 1).astype(np.uint8)
            rows = dirty // per_row
            np.maximum.at(cells[:, x], rows, category)
        return cells, per_row

    def regions(self) -> list[tuple[str, int, int]]:
        """(name, start, end) of each run of the memory flat view served by one region."""
        runs: list[tuple[str, int, int]] = []
        for fr in self.machine.memory.current_map.ranges:
            name = fr.mr.name if fr.mr.name is not None else "(null)"  # as QEMU prints a NULL name
            if runs and runs[-1][0] == name and runs[-1][2] == fr.start:
                runs[-1] = (name, runs[-1][1], fr.end)
            else:
                runs.append((name, fr.start, fr.end))
        return runs

    def summary(self, png: Path | None, screenshot: Path | None) -> str:
        line = f"dirty-demo: {self._stats()}"
        if png is not None:
            from ..plots import heatmap

            cells, per_row = self.heatmap_cells()
            interval = self.args.interval
            heatmap(png, cells, categories=CATEGORIES, x_step=interval / 1000, x_label="time (s)",
                    address_start=0, address_step=per_row * PAGE, regions=self.regions(),
                    title=f"Pages dirtied by the {self.guest} guest ({format_size(self.machine.ram.size)} RAM), "
                          f"every {interval:g} ms, log mode {self.args.log_mode}")
            line += (f"\nheatmap {cells.shape[1]}x{cells.shape[0]} (intervals x rows of {per_row} pages) "
                     f"written to {png}")
        if screenshot is not None:
            from ..screen import write_screenshot

            write_screenshot(self.vga.screen(), screenshot)
            line += f"\ntext screen written to {screenshot}"
        return line


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    demo = DirtyDemo(args, out)
    try:
        if demo.live:
            out.write("\x1b[2J\x1b[H")
        interrupted = demo.run()
        if demo.live:
            out.write(f"\x1b[{ROWS + 5};1H\x1b[?25h")
        print(("interrupted\n" if interrupted else "") + demo.summary(args.png, args.screenshot), file=out,
              flush=True)
    finally:
        demo.close()
    return 0
