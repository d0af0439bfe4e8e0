"""QEMU 7.2's dispatch dump (`info mtree -f -d`): physmem.c's per-FlatView page map.

sections[0] is the unassigned region (2^64). Each range is split |subpage head|whole pages|subpage
tail| and every registration appends a section; a page first claimed by a sub-page piece also gets a
hidden one-page "(noname)" subpage section. The radix tree (9 bits per level, 6 levels, 4 KiB pages)
allocates nodes on demand and writes leaves at the highest level where an aligned run of 512^k pages
fits; compaction then bypasses single-child nodes, which stay allocated and are still printed.

As in 7.2: #0..#3 keep the stale labels [unassigned] [not dirty] [ROM] [watch]; [ROOT] marks the view's
root region; the end is start + section size - 1 (commit f9c307c3f9, in v7.2.0-rc1; earlier releases
used the region's size). mru_section starts NULL and only lookups set it, so nothing is [MRU] unless
``mru_addr`` (the last address looked up) is given.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .flatview import FlatView
    from .region import MemoryRegion

PAGE_BITS = 12
PAGE_SIZE = 1 << PAGE_BITS
L2_BITS = 9
L2_SIZE = 1 << L2_BITS
LEVELS = (64 - PAGE_BITS - 1) // L2_BITS + 1    # 6
NIL = (1 << 26) - 1                             # PHYS_MAP_NODE_NIL
STALE_LABELS = (" [unassigned]", " [not dirty]", " [ROM]", " [watch]")
_M64 = (1 << 64) - 1


class Section(NamedTuple):
    """One entry of ``sections[]``: ``[start, start + size)`` of ``mr`` (None: unassigned or a subpage)."""

    start: int
    size: int
    mr: MemoryRegion | None
    subpage: bool = False


class Dispatch:
    """AddressSpaceDispatch for one FlatView. Entries are ``[skip, ptr]``; skip 0 means ptr is a section."""

    def __init__(self, view: FlatView) -> None:
        self.sections: list[Section] = [Section(0, 1 << 64, None)]
        self.nodes: list[list[list[int]]] = []
        self.root = [1, NIL]
        for fr in view.ranges:
            self._add_range(fr.start, fr.end - fr.start, fr.mr)
        if self.root[0]:
            self._compact(self.root)

    def find(self, addr: int) -> int:
        """phys_page_find: the section index for ``addr``; 0 where the landed-on leaf does not cover it."""
        skip, ptr = self.root
        level, page = LEVELS, addr >> PAGE_BITS
        while skip:
            level -= skip
            if level < 0:
                break
            if ptr == NIL:
                return 0
            skip, ptr = self.nodes[ptr][(page >> (level * L2_BITS)) & (L2_SIZE - 1)]
        s = self.sections[ptr]
        return ptr if s.start <= addr < s.start + s.size else 0

    def _add_section(self, start: int, size: int, mr: MemoryRegion | None, subpage: bool = False) -> int:
        self.sections.append(Section(start, size, mr, subpage))
        return len(self.sections) - 1

    def _add_range(self, start: int, size: int, mr: MemoryRegion) -> None:
        """flatview_add_to_dispatch: head subpage, whole pages, tail subpage."""
        head = min(-start % PAGE_SIZE, size)
        if head:
            self._add_subpage(start, head, mr)
            start, size = start + head, size - head
        whole = size & ~(PAGE_SIZE - 1)
        if whole:
            index = self._add_section(start, whole, mr)
            self._set_level(self.root, start >> PAGE_BITS, whole >> PAGE_BITS, index, LEVELS - 1)
            start, size = start + whole, size - whole
        if size:
            self._add_subpage(start, size, mr)

    def _add_subpage(self, start: int, size: int, mr: MemoryRegion) -> None:
        """register_subpage: the page's subpage section is created on first use, then the piece is added."""
        base = start & ~(PAGE_SIZE - 1)
        existing = self.find(base)
        if not self.sections[existing].subpage:
            assert existing == 0, f"page {base:#x} is already mapped by section #{existing}"
            index = self._add_section(base, PAGE_SIZE, None, subpage=True)
            self._set_level(self.root, base >> PAGE_BITS, 1, index, LEVELS - 1)
        self._add_section(start, size, mr)

    def _set_level(self, entry: list[int], page: int, count: int, leaf: int, level: int) -> tuple[int, int]:
        """phys_page_set_level: returns the (page, count) still to be written."""
        if entry[0] and entry[1] == NIL:
            entry[1] = len(self.nodes)
            # A bottom-level node starts as all-unassigned leaves, any other as empty child pointers.
            self.nodes.append([[0, 0] if level == 0 else [1, NIL] for _ in range(L2_SIZE)])
        node = self.nodes[entry[1]]
        step = 1 << (level * L2_BITS)
        slot = (page >> (level * L2_BITS)) & (L2_SIZE - 1)
        while count and slot < L2_SIZE:
            child = node[slot]
            if page % step == 0 and count >= step:
                child[:] = [0, leaf]
                page, count = page + step, count - step
            else:
                page, count = self._set_level(child, page, count, leaf, level - 1)
            slot += 1
        return page, count

    def _compact(self, entry: list[int]) -> None:
        """phys_page_compact: point ``entry`` past a node that has exactly one non-NIL entry."""
        if entry[1] == NIL:
            return
        used = [child for child in self.nodes[entry[1]] if child[1] != NIL]
        for child in used:
            if child[0]:
                self._compact(child)
        if len(used) == 1:
            only = used[0]
            entry[:] = [entry[0] + only[0] if only[0] else 0, only[1]]


def _entries_line(first: int, last: int, skip: int, ptr: int) -> str:
    where = f"\t{first:3d}      " if first == last else f"\t{first:3d}..{last:<3d} "
    target = "NIL" if ptr == NIL else (f"#{ptr}" if not skip else f"[{ptr}]")
    return f"{where} skip={skip}  ptr={target}"


def format_dispatch(view: FlatView, root: MemoryRegion | None, *, mru_addr: int | None = None) -> str:
    """The text QEMU 7.2 prints after a FlatView's ranges for `info mtree -f -d`.

    QEMU prints nothing for a view with no ranges or no root, and neither do we (""). ``mru_addr``
    stands for the dispatch's lookups: the section a lookup of that address lands on is marked [MRU].
    """
    if not view.ranges or root is None:
        return ""
    d = Dispatch(view)
    mru = d.find(mru_addr) if mru_addr is not None else None
    out = ["  Dispatch", "    Physical sections"]
    for i, s in enumerate(d.sections):
        mr = s.mr
        name = mr.name if mr is not None and mr.name is not None else "(noname)"
        line = (f"      #{i} @{s.start:016x}..{(s.start + s.size - 1) & _M64:016x} {name}"
                f"{STALE_LABELS[i] if i < len(STALE_LABELS) else ''}"
                f"{' [ROOT]' if mr is not None and mr is root else ''}{' [MRU]' if i == mru else ''}"
                f"{' [iommu]' if mr is not None and mr.is_iommu else ''}")
        if mr is not None and mr.alias_target is not None:
            line += f" alias={mr.alias_target.name or 'noname'}"
        out.append(line)
    out.append(f"    Nodes ({L2_BITS} bits per level, {LEVELS} levels) ptr=[{d.root[1]}] skip={d.root[0]}")
    for i, node in enumerate(d.nodes):
        out.append(f"      [{i}]")
        first = 0
        for j in range(1, L2_SIZE + 1):
            if j == L2_SIZE or node[j] != node[first]:
                out.append(_entries_line(first, j - 1, *node[first]))
                first = j
    return "\n".join(out) + "\n"
