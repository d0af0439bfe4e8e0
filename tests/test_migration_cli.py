"""Migration between processes through the real CLI: `kvmshim migrate` (this process and a
destination `kvmshim run --incoming`, over a unix socket and TCP), `kvmshim snapshot save|restore`,
and bad arguments: one `kvmshim: error:` line on stderr and kvmshim's own status."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kvmshim import Machine
from kvmshim.errors import EXIT_ERROR
from kvmshim.migration import migrate
from test_migration import RAM, sweeper_check
from test_screen import png_size

pytestmark = pytest.mark.kvm


def kvmshim(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmshim.cli", *argv], capture_output=True, text=True,
                          timeout=timeout)


def test_migrate_64m_reports_verified_and_the_guests_status():
    done = kvmshim("migrate", "-m", "64M", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["verified"] is True and report["guest_exit_status"] == 0
    assert report["ram_bytes"] >= 64 << 20 and report["bytes_sent"] >= report["ram_bytes"] - (1 << 20) * 2
    assert report["rounds"] == len(report["per_round"]) >= 2 and report["per_round"][-1]["final"]
    assert 0 < report["downtime_ms"] < report["total_ms"]
    assert "destination: sweeper-check: ok" in done.stdout


def test_migrate_over_tcp_draws_the_rounds(tmp_path):
    png = tmp_path / "rounds.png"
    done = kvmshim("migrate", "-m", "16M", "--transport", "tcp", "--per-tick", "64", "--json", "--png", str(png))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["uri"].startswith("tcp:127.0.0.1:") and report["verified"] and report["guest_exit_status"] == 0
    assert png_size(png.read_bytes()) == (800, 450) and f"rounds drawn in {png}" in done.stdout


def test_a_destination_that_refuses_says_why(tmp_path):
    """`kvmshim migrate` whose destination process is built with 32M instead of 16M (its command is
    run through a wrapper that appends `-m 32M`): the destination's ConfigMismatch is shown under the
    source's error, not only the source's broken link."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@" -m 32M\n')
    wrapper.chmod(0o755)
    source = (f"import runpy, sys; sys.executable = {str(wrapper)!r}; "
              "sys.argv = ['kvmshim', 'migrate', '-m', '16M', '--seconds', '2']; "
              "runpy.run_module('kvmshim.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == EXIT_ERROR and lines[0].startswith("kvmshim: error: unix:"), done.stderr
    assert ("destination: kvmshim: error: RAM region 'ram': 0x1000000 bytes on the source, 0x2000000 bytes here"
            in lines[1:]), done.stderr


def test_snapshot_save_and_diff_then_restore_in_a_new_process(tmp_path):
    full, diff = tmp_path / "full.snap", tmp_path / "diff.snap"
    saved = kvmshim("snapshot", "save", str(full), "-m", "16M", "--diff", str(diff), "--seconds", "2", "--json")
    assert saved.returncode == 0, saved.stderr
    first, second = (json.loads(line) for line in saved.stdout.splitlines())
    assert second["parent"] == first["id"] and second["pages"] < first["pages"]
    restored = kvmshim("snapshot", "restore", str(full), str(diff))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "sweeper-check: ok\n"


def test_run_incoming_resumes_a_guest_from_a_file(tmp_path):
    path = tmp_path / "guest.mig"
    with Machine(RAM) as src:
        sweeper_check(src, seconds=1)
        src.start()
        time.sleep(0.2)
        migrate(src, f"file:{path}")
    done = kvmshim("run", "sweeper-check", "-m", "16M", "--incoming", f"file:{path}")
    assert done.returncode == 0 and done.stdout == "sweeper-check: ok\n", done.stderr
    assert "kvmshim: incoming: " in done.stderr and "; resuming" in done.stderr
    other = kvmshim("run", "sweeper-check", "-m", "32M", "--incoming", f"file:{path}")
    assert other.returncode == EXIT_ERROR and other.stdout == ""
    assert other.stderr == "kvmshim: error: RAM region 'ram': 0x1000000 bytes on the source, 0x2000000 bytes here\n"
    spliced = tmp_path / "spliced.mig"
    spliced.write_bytes(path.read_bytes() + b"junk")
    junk = kvmshim("run", "sweeper-check", "-m", "16M", "--incoming", f"file:{spliced}")
    assert junk.returncode == EXIT_ERROR and junk.stdout == "", junk.stderr  # refused, never resumed
    assert "goes on after the END section" in junk.stderr


@pytest.mark.parametrize("argv, phrase", [
    (["run", "hello", "--incoming", "ftp:host"], "migration URI 'ftp:host': use unix:PATH, tcp:HOST:PORT or file:PATH"),
    (["run", "hello", "--incoming", "tcp:localhost"], "tcp: needs HOST:PORT"),
    (["run", "hello", "--incoming", "file:/nonexistent/guest.mig"], "cannot read: No such file or directory"),
    (["run", "hello", "--incoming", "unix:/nonexistent/m.sock"], "cannot listen: No such file or directory"),
    (["run", "--incoming", "file:/x"], "--incoming: the guest the source runs is required (or --machine pc)"),
    (["snapshot", "restore", "/nonexistent.snap"], "file:/nonexistent.snap: cannot read: No such file"),
    (["migrate", "--bandwidth", "0"], "'0' must be positive"),
    (["migrate", "--tick-ms", "5000"], "--tick-ms 5000: a tick must be under"),
])
def test_bad_migration_arguments_give_one_line_and_kvmshims_status(argv, phrase):
    done = kvmshim(*argv, timeout=60)
    lines = done.stderr.splitlines()
    assert done.returncode == EXIT_ERROR and len(lines) == 1 and lines[0].startswith("kvmshim"), done.stderr
    assert "error: " in lines[0] and phrase in lines[0], lines[0]
