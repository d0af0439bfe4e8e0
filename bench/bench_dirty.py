"""Benchmarks of dirty logging, ioeventfd and coalesced MMIO (issue 4). Figures and ratios only.

* Dirty-log fetch + scan per GiB of logged RAM (snapshot_and_clear_dirty then dirty_pages), with the
  guest idle and after it dirtied 10% and 100% of the pages, in GET, GET + CLEAR and ring modes.
* ioeventfd doorbells: the doorbell guest's rate under kvmshim against bench/c/doorbell.c running
  the same image on raw KVM (built with gcc into bench/build/), PIO and MMIO; plus plain exits.
* Coalesced MMIO writes against plain MMIO exits, both under kvmshim.

Run ``python bench/bench_dirty.py`` (``--quick`` for a 256 MiB dirty-log run); nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import struct
import subprocess
import time
from pathlib import Path

import guests
import memapi
from kvmshim.machine import Machine, guest_params
from kvmshim.tick import TICK_PORT, TickPort
from memapi import AccessRules, DirtyClient, Endianness, MemoryRegion, MemoryRegionOps
from memapi.event_notifier import EventNotifier

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
GiB, PAGE, FIRST_PAGE = 1 << 30, 4096, 0x100
BELL_PORT, BELL_GPA = 0x520, 0xC8000
MODES = {"GET": dict(manual_protect=False), "GET+CLEAR": dict(), "ring": dict(dirty_ring=1 << 20)}


# ---------------------------------------------------------------- dirty log
def dirty_log(mode: str, size: int, repeats: int = 3) -> dict[str, tuple[float, int]]:
    """(ms per GiB of fetch + scan, dirty pages found) for the idle, 10% and 100% cases (medians)."""
    count = size // PAGE - FIRST_PAGE
    plan = [("warm-up", count, 1)] + [("10%", count // 10, 10), ("100%", count, 1)] * repeats
    samples: dict[str, list[tuple[float, int]]] = {"idle": [], "10%": [], "100%": []}
    with Machine(size, **MODES[mode]) as m:
        offsets = guest_params(guests.spec("sweeper").source)

        def fetch_and_scan() -> tuple[float, int]:
            start = time.perf_counter()
            snap = memapi.snapshot_and_clear_dirty(m.ram, 0, size, DirtyClient.VGA)
            pages = len(snap.dirty_pages())
            return (time.perf_counter() - start) * 1000 * GiB / size, pages

        def tick() -> int:
            done = plan.pop(0)[0] if plan and tick.started else None
            tick.started = True
            if done == "warm-up":
                m.ram.set_log(True)
                fetch_and_scan()
                samples["idle"] += [fetch_and_scan() for _ in range(5)]
            elif done is not None:
                samples[done].append(fetch_and_scan())
            if not plan:
                return 0
            _, per_tick, stride = plan[0]
            for name, value in (("PER_TICK", per_tick), ("STRIDE", stride)):  # no host-write dirtying
                m.ram.ram_block.write(0x1000 + offsets[name], struct.pack("<I", value))
            return 1

        tick.started = False
        m.io.add_subregion(TICK_PORT, TickPort(tick).region)
        m.load("sweeper")
        m.set_params("sweeper", FIRST=FIRST_PAGE, COUNT=count, SCREEN=0)
        m.run(timeout=600)
        m.ram.set_log(False)
    return {name: (statistics.median(ms for ms, _ in values), statistics.median(n for _, n in values))
            for name, values in samples.items()}


# ---------------------------------------------------------------- doorbells
def _bell(kind: str) -> dict:
    return dict(PORT=BELL_PORT) if kind == "pio" else dict(MMIO=BELL_GPA)


def kvmshim_doorbells(kind: str, count: int, eventfd: bool = False, coalesced: bool = False) -> float:
    """Guest writes per second under kvmshim (a 4-byte register at the bell address)."""
    with Machine() as m, EventNotifier() as e:
        region = MemoryRegion.io("bell", 4, MemoryRegionOps(
            read=lambda *a: 0, write=lambda *a: None, endianness=Endianness.LITTLE,
            valid=AccessRules(1, 4), impl=AccessRules(4, 4)))
        if kind == "pio":
            m.io.add_subregion(BELL_PORT, region)
        else:
            m.system.add_subregion_overlap(BELL_GPA, region, 1)
        if eventfd:
            region.add_eventfd(0, 4, False, 0, e)
        if coalesced:
            region.add_coalescing(0, 4)
        m.load("doorbell")
        m.set_params("doorbell", COUNT=count, **_bell(kind))
        start = time.perf_counter()
        m.run(timeout=600)
        elapsed = time.perf_counter() - start
        if eventfd and e.read() != count:
            raise RuntimeError(f"doorbell bench: {kind} eventfd was signalled the wrong number of times")
        if eventfd:
            region.del_eventfd(0, 4, False, 0, e)
    return count / elapsed


def c_doorbells(kind: str, count: int, eventfd: bool) -> float:
    """The same guest image on raw KVM from C: writes per second."""
    binary = BUILD / "doorbell"
    source = BENCH / "c" / "doorbell.c"
    BUILD.mkdir(exist_ok=True)
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    image = bytearray(guests.build("doorbell").read_bytes())
    offsets = guest_params(guests.spec("doorbell").source)
    for name, value in dict(COUNT=count, **_bell(kind)).items():
        struct.pack_into("<I", image, offsets[name], value)
    patched = BUILD / f"doorbell-{kind}.bin"
    patched.write_bytes(image)
    addr = BELL_PORT if kind == "pio" else BELL_GPA
    mode = f"{kind}-{'eventfd' if eventfd else 'exit'}"
    out = subprocess.run([str(binary), str(patched), hex(addr), mode], check=True, capture_output=True,
                         text=True).stdout
    fields = dict(field.split("=") for field in out.split())
    return count / float(fields["seconds"])


# ---------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 256 MiB dirty-log run instead of 1 GiB")
    size = GiB // 4 if parser.parse_known_args(argv)[0].quick else GiB
    print(f"dirty log: fetch + scan, ms per GiB ({size // (1 << 20)} MiB logged; target idle < 1 ms/GiB)")
    for mode in MODES:
        result = dirty_log(mode, size)
        print(f"  {mode:10s} " + "  ".join(f"{name} {ms:8.3f} ({pages} pages)" for name, (ms, pages) in result.items()))
    print("doorbells, guest writes per second, best of 3 interleaved runs "
          "(kvmshim vs C on raw KVM, same image; target eventfd >= 0.95x)")
    for kind in ("pio", "mmio"):
        for eventfd, count in ((True, 200_000), (False, 20_000)):
            runs = [(kvmshim_doorbells(kind, count, eventfd=eventfd), c_doorbells(kind, count, eventfd))
                    for _ in range(3)]
            ours, ref = max(r[0] for r in runs), max(r[1] for r in runs)
            what = "ioeventfd" if eventfd else "exit"
            print(f"  {kind:4s} {what:9s} kvmshim {ours:11.0f}/s  C {ref:11.0f}/s  ratio {ours / ref:5.2f}x")
    coalesced, plain = kvmshim_doorbells("mmio", 100_000, coalesced=True), kvmshim_doorbells("mmio", 20_000)
    print(f"coalesced MMIO writes {coalesced:.0f}/s vs plain MMIO exits {plain:.0f}/s: {coalesced / plain:.2f}x")


if __name__ == "__main__":
    main()
