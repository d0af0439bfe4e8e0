"""Memory-core benchmarks: full renders (pc map, synthetic 1k/10k/100k regions), lookups, a BAR move.

Growth is shown as the ratio of per-region render cost against the 1k map (n log n
predicts about 1.3x at 10k and 1.7x at 100k; quadratic would be 10x and 100x).
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import memapi
from memapi import MemoryRegion as MR
from memapi.flatview import render
from memapi.system import flatview_root

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def synthetic(n: int, seed: int = 1) -> MR:
    """n regions: RAM banks, MMIO devices, overlapping aliases and nested containers, some disabled."""
    rng = random.Random(seed)
    root = MR.container("system", 1 << 64)
    ram = MR.ram("ram", 1 << 30)
    buses = [MR.container(f"bus{i}", 1 << 32) for i in range(max(1, n // 1000))]
    for i, bus in enumerate(buses):
        root.add_subregion_overlap(0, bus, -1 - i % 3)
    for i in range(n - len(buses)):
        parent = rng.choice(buses) if i % 2 else root
        kind = i % 4
        addr = rng.randrange(0, 1 << 32, 0x1000)
        if kind == 0:
            mr = MR.alias(f"a{i}", ram, rng.randrange(0, 1 << 29, 0x1000), rng.choice([0x1000, 0x10000, 0x200000]))
        elif kind == 1:
            mr = MR.io(f"mmio{i}", rng.choice([0x100, 0x1000]))
        else:
            mr = MR.container(f"c{i}", 0x10000)
            mr.add_subregion(0x800, MR.io(f"reg{i}", 0x400))
        parent.add_subregion_overlap(addr, mr, rng.randint(-2, 3))
        if i % 17 == 0:
            mr.set_enabled(False)
    return root


def pc_map() -> MR:
    """QEMU 7.2's pc-128m memory map, rebuilt from its `info mtree -D` dump (tests/data/oracle)."""
    from oracle_builder import build_machine

    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "oracle"
    machine = build_machine((data / "pc-128m.treeD.txt").read_text(), (data / "pc-128m.flat.txt").read_text())
    return next(s.root for s in machine.spaces if s.name == "memory")


def main() -> None:
    print("memapi render (best of 5)")
    pc = pc_map()
    t = best(lambda: render(flatview_root(pc)), 20)
    print(f"  pc-128m memory map: {t * 1e3:.3f} ms per full render ({len(render(flatview_root(pc)))} ranges)")
    base = None
    for n in (1000, 10000, 100000):
        root = synthetic(n)
        t = best(lambda root=root: render(flatview_root(root)), 3 if n == 100000 else 5)
        per = t / n
        base = base or per
        print(f"  synthetic {n:6} regions: {t * 1e3:8.1f} ms  "
              f"({per * 1e6:.2f} us/region, {per / base:.2f}x the 1k cost)")
    view = render(flatview_root(synthetic(10000)))
    addrs = [random.Random(2).randrange(0, 1 << 32) for _ in range(100000)]
    t = best(lambda: [view.lookup(a) for a in addrs], 3)
    print(f"  lookups (random, 10k map): {len(addrs) / t / 1e6:.2f} M/s;", end="")
    t = best(lambda: [view.lookup(0x1000) for _ in addrs], 3)
    print(f" repeated address (last-hit cache): {len(addrs) / t / 1e6:.2f} M/s")
    bar_move()


def bar_move() -> None:
    """One BAR move on the pc map: which listener calls it costs."""
    calls = []

    class Count(memapi.MemoryListener):
        def region_add(self, s):
            calls.append(("add", s.offset_within_address_space))

        def region_del(self, s):
            calls.append(("del", s.offset_within_address_space))

        def region_nop(self, s):
            calls.append(("nop", s.offset_within_address_space))

    root = MR.container("system", 1 << 64)
    root.add_subregion(0, MR.ram("ram", 128 << 20))
    pci = MR.container("pci", 1 << 64)
    root.add_subregion_overlap(0, pci, -1)
    bars = [MR.io(f"bar{i}", 0x1000) for i in range(32)]
    for i, bar in enumerate(bars):
        pci.add_subregion(0xFE000000 + i * 0x10000, bar)
    space = memapi.AddressSpace(root, "memory")
    space.register_listener(Count())
    calls.clear()
    t = best(lambda: bars[5].set_address(bars[5].addr ^ 0x8000), 5)
    changed = [c for c in calls[-(len(calls) // 5):] if c[0] != "nop"]
    print(f"  BAR move: {t * 1e6:.0f} us per commit, {len(changed)} add/del calls "
          f"({', '.join(f'{k} {a:#x}' for k, a in changed)}) and {len(space.current_map) - 1} nops")
    space.unregister_listener(space.listeners[0])


if __name__ == "__main__":
    main()
