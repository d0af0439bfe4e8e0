"""The dirty-demo command, headless, a couple of seconds per guest, and its heatmap binning."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from kvmshim.commands.dirty_demo import DirtyDemo
from kvmshim.plots import bin_size, format_size
from test_screen import png_size

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("guest, extra", [("screen", []), ("sweeper", ["--pattern", "random", "--log-mode", "ring"])])
def test_demo_runs_headless_and_writes_the_figures(tmp_path, guest, extra):
    heat, shot = tmp_path / "heat.png", tmp_path / "screen.png"
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "dirty-demo", guest, "--seconds", "1.5",
                           "--interval", "100", "--png", str(heat), "--screenshot", str(shot), *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    intervals = int(re.search(r"heatmap (\d+)x512 \(intervals x rows of 1 pages\)", done.stdout)[1])
    assert 10 <= intervals <= 16  # 2 MiB of RAM: 512 rows of one page
    assert png_size(heat.read_bytes()) == (1000, 600) and png_size(shot.read_bytes()) == (720, 400)
    stats = re.search(r"dirty-demo: .* total (\d+) .* screen redraws (\d+)", done.stdout)
    assert int(stats[1]) >= intervals and int(stats[2]) >= intervals - 2  # the screen changes every tick


def test_a_big_guest_is_binned_to_a_readable_heatmap():
    assert (bin_size(512), bin_size(513), bin_size(262144)) == (1, 2, 512)
    assert (format_size(0xB8000), format_size(3 << 29), format_size(1 << 30)) == ("736 KiB", "1.5 GiB", "1 GiB")
    args = argparse.Namespace(ram=1 << 30, log_mode="clear", guest="screen", tick=20.0, interval=100.0)
    demo = DirtyDemo(args, sys.stdout)
    try:
        demo.columns = [([0, 0xB8, 262143], True), ([5000], False)]
        cells, per_row = demo.heatmap_cells()
        assert cells.shape == (512, 2) and per_row == 512  # 262,144 pages in 512 rows of 2 MiB
        assert list(cells[:, 0].nonzero()[0]) == [0, 511] and cells[0, 0] == 2  # the screen page wins its bin
        assert list(cells[:, 1].nonzero()[0]) == [9] and cells[9, 1] == 1
        names = [name for name, _, _ in demo.regions()]
        assert names[:4] == ["ram", "vga-lowmem", "vga.text", "ram"] and "testdev" in names
    finally:
        demo.close()
