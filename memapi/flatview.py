"""FlatViews: a region tree rendered into sorted, non-overlapping ranges.

Rendering follows QEMU's render_memory_region: a depth-first walk in sibling
order (priority descending, newest first among equals) where the first range
rendered at an address wins. QEMU fills gaps by inserting into a sorted array,
which is quadratic; here the walk collects every terminal region's clipped
extent in render order, then one sweep with a heap keyed by render order picks
the winner at each address, which is O(n log n) and gives the same pieces.
A masked alias (our extension, docs/memory-extras.md) renders its target once
per linear piece of its window.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from .region import MemoryRegion

    #: A terminal extent in render order: (lo, hi, region, base, readonly, nonvolatile, unmergeable).
    Piece: TypeAlias = tuple[int, int, MemoryRegion, int, bool, bool, bool]

ADDR_SPACE_END = 1 << 64


class FlatRange:
    """One range of a FlatView: ``[start, end)`` served by terminal region ``mr``."""

    __slots__ = ("start", "end", "mr", "offset_in_region", "dirty_log_mask",
                 "romd_mode", "readonly", "nonvolatile", "unmergeable", "store_path", "load_path")

    def __init__(self, start: int, end: int, mr: MemoryRegion, offset_in_region: int,
                 dirty_log_mask: int, romd_mode: bool, readonly: bool,
                 nonvolatile: bool, unmergeable: bool) -> None:
        self.start = start
        self.end = end
        self.mr = mr
        self.offset_in_region = offset_in_region
        self.dirty_log_mask = dirty_log_mask
        self.romd_mode = romd_mode
        self.readonly = readonly
        self.nonvolatile = nonvolatile
        self.unmergeable = unmergeable
        # How an exit reaches the region, worked out on first use (memapi/exit_path.py).
        self.store_path: Any = None
        self.load_path: Any = None

    @property
    def size(self) -> int:
        return self.end - self.start

    def same_as(self, other: FlatRange) -> bool:
        """QEMU's flatrange_equal: everything but the dirty-log mask."""
        return (self.mr is other.mr and self.start == other.start and self.end == other.end
                and self.offset_in_region == other.offset_in_region
                and self.romd_mode == other.romd_mode and self.readonly == other.readonly
                and self.nonvolatile == other.nonvolatile and self.unmergeable == other.unmergeable)

    def key(self) -> tuple[int, int, int, int, int, bool, bool, bool, bool]:
        """A comparable tuple of every field (the mask included), for tests and replicas."""
        return (self.start, self.end, id(self.mr), self.offset_in_region, self.dirty_log_mask,
                self.romd_mode, self.readonly, self.nonvolatile, self.unmergeable)

    def __repr__(self) -> str:
        flags = "".join(f for f, on in ((" ro", self.readonly), (" nv", self.nonvolatile),
                                        (" um", self.unmergeable), (" !romd", not self.romd_mode)) if on)
        log = f" log={self.dirty_log_mask:#x}" if self.dirty_log_mask else ""
        return (f"<FlatRange {self.start:#x}-{self.end - 1:#x} {self.mr.name}"
                f" @{self.offset_in_region:#x}{flags}{log}>")


class FlatView:
    """An immutable rendering; readers holding one keep a consistent snapshot."""

    __slots__ = ("root", "ranges", "_starts", "_mru", "__weakref__")

    def __init__(self, root: MemoryRegion | None, ranges: list[FlatRange]) -> None:
        self.root = root
        self.ranges: tuple[FlatRange, ...] = tuple(ranges)
        self._starts = [r.start for r in ranges]
        self._mru: FlatRange | None = None

    def lookup(self, addr: int) -> FlatRange | None:
        """The range containing ``addr`` or None (a hole): last hit, then bisect."""
        mru = self._mru
        if mru is not None and mru.start <= addr < mru.end:
            return mru
        return self.find(addr)

    def find(self, addr: int) -> FlatRange | None:
        """lookup() without the last-hit check (for callers that just made it)."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            fr = self.ranges[i]
            if addr < fr.end:
                self._mru = fr
                return fr
        return None

    def __iter__(self) -> Iterator[FlatRange]:
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __repr__(self) -> str:
        root = self.root.name if self.root is not None else "(none)"
        return f"<FlatView root={root} ranges={len(self.ranges)}>"


def render(root: MemoryRegion | None) -> FlatView:
    """Render ``root`` over ``[0, 2**64)`` and simplify (QEMU's generate_memory_topology)."""
    if root is None:
        return FlatView(None, [])
    pieces: list[Piece] = []
    _collect(root, 0, 0, ADDR_SPACE_END, False, False, False, pieces)
    return FlatView(root, _simplify(_paint(pieces)))


def _collect(mr: MemoryRegion, base: int, clip_lo: int, clip_hi: int, ro: bool, nv: bool, um: bool,
             out: list[Piece]) -> None:
    """Append (lo, hi, mr, base, ro, nv, um) for every terminal extent, in render order."""
    if not mr.enabled:
        return
    base += mr.addr
    ro = ro or mr.readonly
    nv = nv or mr.nonvolatile
    um = um or mr.unmergeable
    end = base + mr.size
    lo = base if base > clip_lo else clip_lo
    hi = end if end < clip_hi else clip_hi
    if lo >= hi:
        return
    alias = mr.alias_target
    if alias is not None:
        mask = mr.alias_mask
        if mask is None:
            _collect(alias, base - alias.addr - mr.alias_offset, lo, hi, ro, nv, um, out)
        else:
            _collect_masked(mr, alias, mask, base, lo, hi, ro, nv, um, out)
        return
    for sub in mr.subregions:
        _collect(sub, base, lo, hi, ro, nv, um, out)
    if mr.terminates:
        out.append((lo, hi, mr, base, ro, nv, um))


def _collect_masked(mr: MemoryRegion, alias: MemoryRegion, mask: int, base: int, lo: int, hi: int,
                    ro: bool, nv: bool, um: bool, out: list[Piece]) -> None:
    """A masked alias: render its target once per linear piece of the window that meets the clip.

    Window offset x reaches the target at alias_offset + (x & mask), which is linear over
    pieces as long as the mask's trailing ones; each piece renders like a plain alias.
    """
    run = (mask + 1) & ~mask
    x = (lo - base) & ~(run - 1)
    while base + x < hi:
        start = base + x
        _collect(alias, start - alias.addr - mr.alias_offset - (x & mask),
                 max(lo, start), min(hi, start + run), ro, nv, um, out)
        x += run


def _paint(pieces: list[Piece]) -> list[tuple[int, int, Piece]]:
    """Maximal runs [lo, hi) owned by the earliest-rendered piece: (lo, hi, piece)."""
    n = len(pieces)
    order = sorted(range(n), key=lambda i: pieces[i][0])
    runs: list[list[int]] = []
    heap: list[int] = []
    k = 0
    x = 0
    while k < n or heap:
        if not heap:
            x = pieces[order[k]][0]
        while k < n and pieces[order[k]][0] <= x:
            heappush(heap, order[k])
            k += 1
        while heap and pieces[heap[0]][1] <= x:
            heappop(heap)
        if not heap:
            continue
        top = heap[0]
        nxt = pieces[top][1]
        if k < n and pieces[order[k]][0] < nxt:
            nxt = pieces[order[k]][0]
        if runs and runs[-1][2] == top and runs[-1][1] == x:
            runs[-1][1] = nxt
        else:
            runs.append([x, nxt, top])
        x = nxt
    return [(lo, hi, pieces[i]) for lo, hi, i in runs]


def _simplify(runs: list[tuple[int, int, Piece]]) -> list[FlatRange]:
    """Build FlatRanges and merge neighbours as flatview_simplify does."""
    out: list[FlatRange] = []
    last = None
    for lo, hi, (_, _, mr, base, ro, nv, um) in runs:
        offset = lo - base
        mask = mr.effective_dirty_log_mask
        if (last is not None and last.end == lo and last.mr is mr and not um and not last.unmergeable
                and last.offset_in_region + (last.end - last.start) == offset
                and last.dirty_log_mask == mask and last.romd_mode == mr.romd_mode
                and last.readonly == ro and last.nonvolatile == nv):
            last.end = hi
            continue
        last = FlatRange(lo, hi, mr, offset, mask, mr.romd_mode, ro, nv, um)
        out.append(last)
    return out
