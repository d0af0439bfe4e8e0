"""kvmshim.plots: the figure shapes other modules reuse, written as PNG files with matplotlib's Agg."""
from __future__ import annotations

import numpy as np

from kvmshim.plots import bar_chart, heatmap
from test_screen import png_size


def test_round_chart_with_bars_and_a_rate_line(tmp_path):
    path = tmp_path / "rounds.png"
    bar_chart(path, [1, 2, 3, 4], {"pages sent": [32768, 4100, 900, 120]}, bar_unit="pages",
              lines={"dirty rate": [5200.0, 4900.0, 3100.0, 800.0]}, line_unit="dirty rate (pages/s)",
              title="Pre-copy migration of a 128 MiB guest")
    assert png_size(path.read_bytes()) == (800, 450)


def test_heatmap_with_regions(tmp_path):
    path = tmp_path / "heat.png"
    cells = np.zeros((64, 30), dtype=np.uint8)
    cells[10:20, ::3] = 1
    cells[40, :] = 2
    heatmap(path, cells, categories=(("clean", "#141428"), ("dirty", "#ffd228"), ("screen", "#50c8ff")),
            x_step=0.1, x_label="time (s)", address_start=0, address_step=1 << 20,
            regions=[("ram", 0, 40 << 20), ("vga", 40 << 20, 41 << 20), ("ram", 41 << 20, 64 << 20)],
            title="64 MiB, 1 MiB rows")
    assert png_size(path.read_bytes()) == (1000, 600)
