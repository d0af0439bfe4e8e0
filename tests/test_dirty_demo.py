"""The dirty-demo command, headless, a couple of seconds per guest."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from kvm_helpers import requires_kvm
from kvmshim.commands.dirty_demo import render_text_screen
from kvmshim.png import encode_png, png_size

pytestmark = requires_kvm


@pytest.mark.parametrize("guest, extra", [("screen", []), ("sweeper", ["--pattern", "random", "--log-mode", "ring"])])
def test_demo_runs_headless_and_writes_the_heatmap(tmp_path, guest, extra):
    png = tmp_path / "heat.png"
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "dirty-demo", guest, "--seconds", "1.5",
                           "--interval", "100", "--png", str(png), *extra], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    intervals = int(re.search(r"heatmap (\d+)x512 ", done.stdout)[1])
    assert 10 <= intervals <= 16
    assert png_size(png.read_bytes()) == (intervals, 512)  # 2 MiB of RAM: 512 pages
    stats = re.search(r"dirty-demo: .* total (\d+) .* screen redraws (\d+)", done.stdout)
    assert int(stats[1]) >= intervals and int(stats[2]) >= intervals - 2  # the screen changes every tick


def test_png_and_text_screen_helpers():
    assert png_size(encode_png([b"\0\0\0" * 3] * 2, 3)) == (3, 2)
    with pytest.raises(ValueError):
        encode_png([b"\0"], 3)
    screen = render_text_screen(bytes([ord("A"), 0x1F]) + bytes(2 * 80 * 25 - 2))
    assert screen.startswith("\x1b[97;44mA") and screen.count("\n") == 24
