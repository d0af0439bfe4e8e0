"""Benchmarks of live migration (issue 13). Figures and ratios only; nothing is asserted.

* The test machine running sweeper-check, 64 MiB and 1 GiB, at a low dirty rate (4 pages every
  millisecond) and at the highest the vCPU reaches (64 pages per tick, unpaced), migrated by
  ``kvmshim migrate`` from this process to a ``kvmshim run --incoming`` process over a unix socket:
  rounds, bytes sent / RAM, downtime, total time, link throughput, verification and the guest's
  own check on the destination. A PNG of each case's rounds goes to bench/build.
* The pc machine idling after SeaBIOS's POST, 128 MiB and 1 GiB, migrated into a file by
  kvmshim (``file:``) and by QEMU 7.2 (``migrate exec:cat > FILE``, KVM, the same firmware):
  total time, downtime and bytes, side by side.

Run ``python bench/bench_migration.py`` (``--quick``: the 64 MiB cases and 128 MiB pc only).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
MiB, GiB = 1 << 20, 1 << 30
#: (label, options): the low rate is TSC-paced, the high one as fast as the vCPU writes.
RATES = (("low", ["--per-tick", "4", "--tick-ms", "1"]), ("high", ["--per-tick", "64", "--tick-ms", "0"]))
#: RAM size -> (ms to let the guest fill its pages first, guest seconds): 1 GiB takes ~2 s to fill.
SIZES = {"64M": (500, 4), "1G": (3000, 10)}


def sweeper_case(size: str, rate: str, options: list[str]) -> dict:
    after, seconds = SIZES[size]
    png = BUILD / f"migration-{size}-{rate}.png"
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", "migrate", "-m", size, "--json", "--png", str(png),
                           "--after", str(after), "--seconds", str(seconds), "--max-rounds", "10", *options],
                          capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"kvmshim migrate -m {size} ({rate}) failed: {done.stderr.strip()}")
    return json.loads(done.stdout.splitlines()[-1])


def kvmshim_pc(ram: int, path: Path) -> dict:
    from kvmshim.migration import migrate
    from kvmshim.pc.machine import PcMachine, seabios_config

    with PcMachine(seabios_config(ram), stop_at_post_end=True) as machine:
        machine.boot()
        machine.start()
        time.sleep(0.5)
        stats = migrate(machine, f"file:{path}")
    return {"total_ms": stats.total_ms, "downtime_ms": stats.downtime_ms, "bytes": stats.bytes_sent}


#: Seconds QEMU gets to create its QMP socket, and SeaBIOS to reach its prompt.
QMP_DEADLINE, POST_DEADLINE = 10, 120


def _wait_until(ready: Callable[[], bool], what: str, qemu: subprocess.Popen, seconds: float) -> None:
    """Poll ``ready``; a QEMU that exits or never gets there raises instead of hanging the bench."""
    deadline = time.monotonic() + seconds
    while not ready():
        if qemu.poll() is not None:
            raise RuntimeError(f"QEMU exited with status {qemu.returncode} before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"QEMU: no {what} after {seconds} s")
        time.sleep(0.05)


def qemu_pc(ram: int, path: Path) -> dict:
    """QEMU 7.2 booting the same SeaBIOS to its prompt, then `migrate exec:cat > path` over QMP."""
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as name:
        qmp, log = Path(name) / "qmp.sock", Path(name) / "debugcon.log"
        qemu = subprocess.Popen(["qemu-system-x86_64", "-M", "pc", "-accel", "kvm", "-cpu", "qemu64",
                                 "-m", str(ram // MiB), "-nodefaults", "-display", "none",
                                 "-qmp", f"unix:{qmp},server=on,wait=off", "-chardev", f"file,id=log,path={log}",
                                 "-device", "isa-debugcon,iobase=0x402,chardev=log"], stderr=subprocess.DEVNULL)
        try:
            _wait_until(qmp.exists, "QMP socket", qemu, QMP_DEADLINE)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(60)  # a QEMU that stops answering raises TimeoutError
                sock.connect(str(qmp))
                channel = sock.makefile("rw")

                def command(name: str, **arguments) -> dict:
                    channel.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
                    channel.flush()
                    while "return" not in (reply := json.loads(channel.readline())) and "error" not in reply:
                        pass
                    return reply

                channel.readline()
                command("qmp_capabilities")
                _wait_until(lambda: log.exists() and b"No bootable device" in log.read_bytes(),
                            "SeaBIOS prompt on debugcon", qemu, POST_DEADLINE)
                time.sleep(0.5)
                command("migrate", uri=f"exec:cat > {path}")
                while (status := command("query-migrate")["return"]).get("status") not in ("completed", "failed"):
                    time.sleep(0.01)
                command("quit")
            qemu.wait(30)
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
    return {"total_ms": status.get("total-time", 0), "downtime_ms": status.get("downtime", 0),
            "bytes": status["ram"]["transferred"] if "ram" in status else 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and 128 MiB cases only")
    args = parser.parse_args(argv if argv is not None else [])
    BUILD.mkdir(exist_ok=True)
    sizes = ["64M"] if args.quick else list(SIZES)
    print("sweeper-check on the test machine, two processes over a unix socket:")
    print(f"{'RAM':>5} {'rate':>5} {'rounds':>6} {'sent/RAM':>8} {'downtime ms':>11} {'total ms':>9} {'MiB/s':>7} "
          f"{'throttle':>8} {'verified':>8} {'guest':>5}")
    for size in sizes:
        for rate, options in RATES:
            r = sweeper_case(size, rate, options)
            throttle = max(round["throttle"] for round in r["per_round"])
            print(f"{size:>5} {rate:>5} {r['rounds']:6d} {r['bytes_sent'] / r['ram_bytes']:8.2f} "
                  f"{r['downtime_ms']:11.1f} {r['total_ms']:9.0f} {r['link_rate'] / MiB:7.0f} {throttle:7d}% "
                  f"{r['verified']!s:>8} {r['guest_exit_status']!s:>5}", flush=True)
    print("\nthe pc machine idle after SeaBIOS's POST, migrated into a file (kvmshim vs QEMU 7.2):")
    print(f"{'RAM':>6} {'':>8} {'total ms':>9} {'downtime ms':>11} {'bytes':>10}   total time kvmshim/QEMU")
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as directory:
        for ram in [128 * MiB] + ([] if args.quick else [GiB]):
            ours = kvmshim_pc(ram, Path(directory) / "kvmshim.mig")
            theirs = qemu_pc(ram, Path(directory) / "qemu.mig")
            for name, r in (("kvmshim", ours), ("QEMU", theirs)):
                ratio = f"   {ours['total_ms'] / max(theirs['total_ms'], 1):.2f}" if name == "QEMU" else ""
                print(f"{ram // MiB:5d}M {name:>8} {r['total_ms']:9.0f} {r['downtime_ms']:11.1f} "
                      f"{r['bytes']:10d}{ratio}", flush=True)
            for leftover in Path(directory).iterdir():
                os.unlink(leftover)


if __name__ == "__main__":
    main(sys.argv[1:])
