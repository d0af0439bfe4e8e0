"""The exit path: one ROM's PIO and MMIO exits under a bare C loop, QEMU 7.2 + KVM and `kvmshim run`.

bench/guest_src/exit_rom.S is a 64 KiB ROM entered from the reset vector, so the same bytes run
under bench/c/rom_loop.c (raw KVM, exits handled in C), ``qemu-system-x86_64 -bios`` and
``kvmshim run``: COUNT OUTs to port 0x700, or COUNT byte stores to MMIO at 0xd0000, then the
debug-exit port. Each of the three runs the ROM with a short and a long COUNT as a whole process;
the difference of the wall times over the difference of the counts is the cost of one exit, with
start-up and teardown cancelled. Runs are interleaved (C, QEMU, kvmshim, C, ...), medians of
REPEATS; and the floor, a Python loop that calls the exit helper and nothing else. Then the
memory core's general path (an owned device, a 4-byte access split into bytes) against the exit
fast path, in this process. Figures and ratios only; writes bench/build/exits.png.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

import guests
import memapi
from memapi import AccessRules, AddressSpace, MemoryRegion, MemoryRegionOps

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
SHORT, LONG = 20_000, 220_000
REPEATS = 3
KINDS = {"PIO": 0, "MMIO": 1}
QEMU = shutil.which("qemu-system-x86_64")


def rom(kind: int, count: int) -> tuple[Path, Path]:
    """(source, image) of the ROM for ``kind`` and ``count`` (built through the guest cache)."""
    template = (HERE / "guest_src" / "exit_rom.S").read_text()
    header, rest = template.split("\n", 1)
    source = BUILD / f"exit_rom-{kind}-{count}.S"
    BUILD.mkdir(exist_ok=True)
    source.write_text(f"{header}\n.set COUNT, {count}\n.set KIND, {kind}\n{rest}")
    return source, guests.build(source)


def c_loop() -> Path:
    exe, source = BUILD / "rom_loop", HERE / "c" / "rom_loop.c"
    if not exe.exists() or exe.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(source)], check=True)
    return exe


def commands(rom: tuple[Path, Path]) -> dict[str, list[str]]:
    """How each system runs the ROM (each exits once the ROM writes the debug-exit port)."""
    source, image = rom
    out = {"C": [str(c_loop()), str(image)],
           "kvmshim": [str(Path(sys.executable).with_name("kvmshim")), "run", str(source)]}
    if QEMU is not None:
        out["QEMU"] = [QEMU, "-accel", "kvm", "-M", "pc", "-m", "16", "-nodefaults", "-display", "none",
                       "-bios", str(image), "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-no-reboot"]
    return out


def wall(argv: list[str]) -> float:
    """Seconds the command takes; it must end as the ROM ends it (QEMU: isa-debug-exit's 1)."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    if done.returncode != (1 if argv[0] == QEMU else 0):
        raise RuntimeError(f"{' '.join(argv)}: status {done.returncode}: {done.stderr.decode()[-300:]}")
    return time.perf_counter() - start


def exit_costs() -> dict[str, dict[str, float]]:
    """kind -> system -> seconds per exit (median of REPEATS, start-up cancelled)."""
    results: dict[str, dict[str, float]] = {}
    for kind, code in KINDS.items():
        images = {count: rom(code, count) for count in (SHORT, LONG)}
        for image in images.values():  # build, and warm the caches, before timing
            for argv in commands(image).values():
                wall(argv)
        samples: dict[str, list[float]] = {}
        for _ in range(REPEATS):
            for system in commands(images[SHORT]):
                short, long = (wall(commands(images[n])[system]) for n in (SHORT, LONG))
                samples.setdefault(system, []).append((long - short) / (LONG - SHORT))
        results[kind] = {system: statistics.median(values) for system, values in samples.items()}
    return results


def python_floor() -> float:
    """Seconds per exit of the PIO ROM in a Python loop that only calls the C helper and dispatches
    nothing: what any design that returns to Python for each exit costs at least on this machine."""
    from kvm.fast_exit import PIO_OUT, run_decoded
    from kvmshim import Machine

    samples = []
    for _ in range(REPEATS):
        with Machine() as m:
            m.load(rom(KINDS["PIO"], LONG)[0])
            ctx = m.vcpu.run_ctx
            with m.vcpu.kickable():
                start, exits = time.perf_counter(), 0
                while run_decoded(ctx, 0, 1) & 7 == PIO_OUT:
                    exits += 1
                samples.append((time.perf_counter() - start) / exits)
    return statistics.median(samples)


def general_path() -> dict[str, float]:
    """Microseconds per access through AddressSpace: the exit fast path, an owned device, a split access."""
    rules, ops = AccessRules(1, 4), MemoryRegionOps(read=lambda mr, a, s: 0, write=lambda mr, a, v, s: None)
    split = MemoryRegionOps(read=lambda mr, a, s: 0, write=lambda mr, a, v, s: None, valid=rules,
                            impl=AccessRules(1, 1))
    root = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    root.add_subregion(0x700, MemoryRegion.io("plain", 4, ops))
    root.add_subregion(0x710, MemoryRegion.io("owned", 4, ops, owner=object()))
    root.add_subregion(0x720, MemoryRegion.io("split", 4, split))
    space = AddressSpace(root, "bench-io", memapi.MemorySystem("bench"))
    cases = {"plain store (exit path)": lambda: space.store(0x700, 5, 1),
             "owned device, write_int": lambda: space.write_int(0x710, 5, 1),
             "owned device, read_int": lambda: space.read_int(0x710, 1),
             "4 bytes split into bytes": lambda: space.write_int(0x720, 5, 4)}
    n = 100_000
    return {name: min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6 for name, fn in cases.items()}


def main() -> None:
    print(f"exit round trip, same ROM, {LONG - SHORT} exits (process wall times differenced), "
          f"medians of {REPEATS}, interleaved")
    costs = exit_costs()
    for kind, by_system in costs.items():
        line = "   ".join(f"{system} {seconds * 1e6:6.2f} us" for system, seconds in by_system.items())
        ratios = f"kvmshim/C {by_system['C'] / by_system['kvmshim']:.2f}x"
        if "QEMU" in by_system:
            ratios += f", kvmshim/QEMU {by_system['QEMU'] / by_system['kvmshim']:.2f}x, " \
                      f"QEMU/C {by_system['C'] / by_system['QEMU']:.2f}x"
        print(f"  {kind:4}: {line}   rate ratios {ratios}")
    floor = python_floor()
    print(f"  floor: a Python loop that only calls the C helper, PIO: {floor * 1e6:6.2f} us per exit, "
          f"{costs['PIO']['C'] / floor:.2f}x the C loop's rate")
    print("general access path (in this process, best of 5)")
    for name, micros in general_path().items():
        print(f"  {name:28} {micros:5.2f} us")
    try:
        from kvmshim.plots import bar_chart

        systems = list(next(iter(costs.values())))
        bar_chart(BUILD / "exits.png", list(costs), {s: [costs[k][s] * 1e6 for k in costs] for s in systems},
                  bar_unit="microseconds per exit", x_label="exit kind",
                  title="One exit's round trip: the same ROM under C, QEMU 7.2 + KVM and kvmshim")
        print(f"  figure: {BUILD / 'exits.png'}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
