"""Exit round trip through the whole stack vs a minimal C loop running the same guest code.

Prints microseconds per exit for PIO and MMIO and the ratio of exit rates (Python / C).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import guests
from kvmshim.machine import Machine
from memapi import MemoryRegion, MemoryRegionOps

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"


def c_loop() -> Path:
    BUILD.mkdir(exist_ok=True)
    exe = BUILD / "exit_loop"
    source = HERE / "c" / "exit_loop.c"
    if not exe.exists() or exe.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(source)], check=True)
    return exe


def run_c(image: Path) -> float:
    exits, seconds = subprocess.run([str(c_loop()), str(image)], capture_output=True, text=True,
                                    check=True).stdout.split()
    return float(seconds) / int(exits)


def run_python(guest: Path) -> float:
    with Machine() as m:
        ops = MemoryRegionOps(read=lambda mr, a, s: 0, write=lambda mr, a, v, s: None)
        m.io.add_subregion(0x700, MemoryRegion.io("bench-port", 1, ops))
        m.system.del_subregion(m.testdev.region)
        m.system.add_subregion_overlap(0xD0000, MemoryRegion.io("bench-mmio", 0x1000, ops), 1)
        m.load(guest)
        start = time.perf_counter()
        outcome = m.run(timeout=120)
        return (time.perf_counter() - start) / outcome.exits


def main() -> None:
    print("exit round trip (same guest code, best of 3)")
    for kind in ("pio", "mmio"):
        source = HERE / "guest_src" / f"{kind}_loop.S"
        image = guests.build(source)
        c = min(run_c(image) for _ in range(3))
        py = min(run_python(source) for _ in range(3))
        print(f"  {kind:4}: C {c * 1e6:6.2f} us/exit   kvmshim {py * 1e6:6.2f} us/exit   "
              f"rate ratio kvmshim/C = {c / py:.2f}x")


if __name__ == "__main__":
    main()
