"""`info mtree -f -d`: memapi.dispatch_tree against QEMU 7.2's physmem.c (flatview_add_to_dispatch,
phys_page_find)."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from memapi import MemoryRegion
from memapi.dispatch_tree import Dispatch, format_dispatch
from memapi.flatview import render
from oracle_builder import build_machine

M = 1 << 20
ORACLE = Path(__file__).parent / "data" / "oracle"


def container(*children, size: int = 1 << 64) -> MemoryRegion:
    """A 2^64 root holding ``(addr, region)`` or ``(addr, region, priority)`` children."""
    root = MemoryRegion.container("root", size)
    for addr, mr, *prio in children:
        root.add_subregion_overlap(addr, mr, prio[0] if prio else 0)
    return root


def pc_512m() -> MemoryRegion:
    """The `pc` memory map of QEMU 7.2's `info mtree -f` (512M, before the firmware ran: PAM maps PCI)."""
    system = MemoryRegion.container("system", 1 << 64)
    ram = MemoryRegion.ram("pc.ram", 512 * M)
    bios = MemoryRegion.rom("pc.bios", 0x40000)
    pci = MemoryRegion.container("pci", 1 << 64)
    pci.add_subregion_overlap(0xc0000, MemoryRegion.rom("pc.rom", 0x20000), 1)
    pci.add_subregion_overlap(0xe0000, MemoryRegion.alias("isa-bios", bios, 0x20000, 0x20000), 1)
    pci.add_subregion(0xfffc0000, bios)
    system.add_subregion(0, MemoryRegion.alias("ram-below-4g", ram, 0, 512 * M))
    system.add_subregion_overlap(0, pci, -1)
    system.add_subregion_overlap(0xc0000, MemoryRegion.alias("pam-pci", pci, 0xc0000, 0x40000), 1)
    system.add_subregion(0xfec00000, MemoryRegion.io("kvm-ioapic", 0x1000))
    system.add_subregion(0xfed00000, MemoryRegion.io("hpet", 0x400))
    system.add_subregion_overlap(0xfee00000, MemoryRegion.io("kvm-apic-msi", 0x100000), 4096)
    return system


def dump(root: MemoryRegion, **kwargs) -> str:
    return format_dispatch(render(root), root, **kwargs)


def sections(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[2:lines.index(next(line for line in lines if line.startswith("    Nodes")))]


# A real dump of QEMU 7.2 (pc, 512M, `info mtree -f -d`), in order; the lookups QEMU had done
# by then left pc.ram's low section as the MRU, which mru_addr=0 reproduces.
REAL_EXCERPT = """\
  Dispatch
    Physical sections
      #0 @0000000000000000..ffffffffffffffff (noname) [unassigned]
      #1 @0000000000000000..00000000000bffff pc.ram [not dirty] [MRU]
      #2 @00000000000c0000..00000000000dffff pc.rom [ROM]
      #3 @00000000000e0000..00000000000fffff pc.bios [watch]
      #4 @0000000000100000..000000001fffffff pc.ram
      #6 @00000000fed00000..00000000fed00fff (noname)
      #7 @00000000fed00000..00000000fed003ff hpet
    Nodes (9 bits per level, 6 levels) ptr=[3] skip=4
      [0]
\t  0       skip=3  ptr=[3]
\t  1..511  skip=1  ptr=NIL
      [5]
\t  0..191  skip=0  ptr=#1
\t192..223  skip=0  ptr=#2
""".splitlines()


def test_pc_matches_the_real_qemu_dump():
    root = pc_512m()
    assert [(r.start, r.end - 1, r.mr.name) for r in render(root)] == [
        (0, 0xbffff, "pc.ram"), (0xc0000, 0xdffff, "pc.rom"), (0xe0000, 0xfffff, "pc.bios"),
        (0x100000, 0x1fffffff, "pc.ram"), (0xfec00000, 0xfec00fff, "kvm-ioapic"),
        (0xfed00000, 0xfed003ff, "hpet"), (0xfee00000, 0xfeefffff, "kvm-apic-msi"),
        (0xfffc0000, 0xffffffff, "pc.bios")]
    lines = iter(dump(root, mru_addr=0).splitlines())
    for want in REAL_EXCERPT:     # an ordered subsequence, and [5]'s first two lines directly follow it
        assert want in lines, want
    assert next(lines) == "\t224..255  skip=0  ptr=#3"
    assert next(lines) == "\t256..511  skip=0  ptr=#4"


def test_scenario_40_subpage_section_then_the_region():
    """A 0x400-byte I/O region at 0xfed00000, worked out by hand from physmem.c."""
    assert dump(container((0xfed00000, MemoryRegion.io("hpet", 0x400)))) == """\
  Dispatch
    Physical sections
      #0 @0000000000000000..ffffffffffffffff (noname) [unassigned]
      #1 @00000000fed00000..00000000fed00fff (noname) [not dirty]
      #2 @00000000fed00000..00000000fed003ff hpet [ROM]
    Nodes (9 bits per level, 6 levels) ptr=[5] skip=6
      [0]
\t  0       skip=5  ptr=[5]
\t  1..511  skip=1  ptr=NIL
      [1]
\t  0       skip=4  ptr=[5]
\t  1..511  skip=1  ptr=NIL
      [2]
\t  0       skip=3  ptr=[5]
\t  1..511  skip=1  ptr=NIL
      [3]
\t  0..2    skip=1  ptr=NIL
\t  3       skip=2  ptr=[5]
\t  4..511  skip=1  ptr=NIL
      [4]
\t  0..501  skip=1  ptr=NIL
\t502       skip=1  ptr=[5]
\t503..511  skip=1  ptr=NIL
      [5]
\t  0..255  skip=0  ptr=#0
\t256       skip=0  ptr=#1
\t257..511  skip=0  ptr=#0
"""


def test_head_pages_tail_split_and_shared_subpages():
    root = container((0x1000, MemoryRegion.io("a", 0x10)), (0x1800, MemoryRegion.io("b", 0x10)),
                     (0x2800, MemoryRegion.io("c", 0x2000)))
    assert sections(dump(root)) == [
        "      #0 @0000000000000000..ffffffffffffffff (noname) [unassigned]",
        "      #1 @0000000000001000..0000000000001fff (noname) [not dirty]",   # a's page, shared with b
        "      #2 @0000000000001000..000000000000100f a [ROM]",
        "      #3 @0000000000001800..000000000000180f b [watch]",
        "      #4 @0000000000002000..0000000000002fff (noname)",              # c's head page
        "      #5 @0000000000002800..0000000000002fff c",
        "      #6 @0000000000003000..0000000000003fff c",                     # c's one whole page
        "      #7 @0000000000004000..0000000000004fff (noname)",              # c's tail page
        "      #8 @0000000000004000..00000000000047ff c",
    ]


def test_terminating_root_is_marked_root():
    io = MemoryRegion.io("io", 0x10000)
    io.add_subregion(0x70, MemoryRegion.io("rtc", 2))
    assert sections(format_dispatch(render(io), io)) == [
        "      #0 @0000000000000000..ffffffffffffffff (noname) [unassigned]",
        "      #1 @0000000000000000..0000000000000fff (noname) [not dirty]",
        "      #2 @0000000000000000..000000000000006f io [ROM] [ROOT]",
        "      #3 @0000000000000070..0000000000000071 rtc [watch]",
        "      #4 @0000000000000072..0000000000000fff io [ROOT]",     # the section's end, not io's (7.2.0-rc1 fix)
        "      #5 @0000000000001000..000000000000ffff io [ROOT]",
    ]


def test_whole_address_space_range_leaves_at_the_top_level():
    root = MemoryRegion.io("everything", 1 << 64)
    text = format_dispatch(render(root), root)
    assert "      #1 @0000000000000000..ffffffffffffffff everything [not dirty] [ROOT]" in text
    assert text.endswith("    Nodes (9 bits per level, 6 levels) ptr=[0] skip=1\n      [0]\n"
                         "\t  0..127  skip=0  ptr=#1\n\t128..511  skip=1  ptr=NIL\n")


def test_mru_only_when_a_lookup_is_modelled():
    root = container((0xfed00000, MemoryRegion.io("hpet", 0x400)), (0x10000, MemoryRegion.ram("r", 0x2000)))
    assert "[MRU]" not in dump(root)
    assert [line for line in dump(root, mru_addr=0x11fff).splitlines() if "[MRU]" in line] == [
        "      #1 @0000000000010000..0000000000011fff r [not dirty] [MRU]"]
    # A lookup that lands on a subpage leaves the subpage section (not the piece) as MRU; a hole leaves #0.
    assert "#2 @00000000fed00000..00000000fed00fff (noname) [ROM] [MRU]" in dump(root, mru_addr=0xfed00800)
    assert "#0 @0000000000000000..ffffffffffffffff (noname) [unassigned] [MRU]" in dump(root, mru_addr=0x5000)


def test_iommu_label_and_empty_views():
    root = container((0x100000, MemoryRegion.iommu("dmar", 0x1000, lambda *a: None)))
    assert "      #1 @0000000000100000..0000000000100fff dmar [not dirty] [iommu]" in dump(root)
    assert dump(MemoryRegion.container("empty", 0x1000)) == ""      # QEMU prints no dispatch for an empty view
    assert format_dispatch(render(None), None) == ""


def test_compacted_tree_finds_every_address():
    """phys_page_find over the compacted tree agrees with the FlatView (subpages stand for their page)."""
    view = render(pc_512m())
    d = Dispatch(view)
    rng = random.Random(7)
    probes = [a for fr in view for a in (fr.start, fr.end - 1, fr.end)] + [rng.getrandbits(32) for _ in range(500)]
    probes += [rng.getrandbits(64) for _ in range(100)]
    for addr in probes:
        s = d.sections[d.find(addr)]
        fr = view.lookup(addr)
        if fr is None:      # a hole: unassigned, or the subpage of a partly used page
            assert s.mr is None and (s.subpage or s.size == 1 << 64), hex(addr)
            assert not s.subpage or s.start <= addr < s.start + s.size, hex(addr)
        else:
            assert s.start <= addr < s.start + s.size and (s.subpage or s.mr is fr.mr), hex(addr)


def test_oracle_pc_128m_views():
    machine = build_machine((ORACLE / "pc-128m.treeD.txt").read_text(), (ORACLE / "pc-128m.flat.txt").read_text())
    try:
        spaces = {s.name: s for s in machine.spaces}
        memory, io = spaces["memory"].current_map, spaces["I/O"].current_map
        text = format_dispatch(memory, memory.root)
        assert "    Nodes (9 bits per level, 6 levels) ptr=[3] skip=4" in text
        assert "      #4 @0000000000100000..0000000007ffffff pc.ram" in text
        io_text = format_dispatch(io, io.root)
        assert "      #1 @0000000000000000..0000000000000fff (noname) [not dirty]" in io_text
        assert "      #3 @0000000000000008..000000000000000f dma-cont [watch]" in io_text
        assert "      #4 @0000000000000010..000000000000001f io [ROOT]" in io_text
        assert format_dispatch(spaces["i440FX"].current_map, spaces["i440FX"].current_map.root) == ""
    finally:
        machine.destroy()


@pytest.mark.parametrize("start,size", [(0x0, 0x1000), (0x7ff, 0x2), (0xfff, 0x1002), (0x200000, 0x200000),
                                        (0x1ff000, 0x402000), (0x8000000000 - 0x1000, 0x3000)])
def test_section_bytes_add_up(start, size):
    """Every byte of a range is in exactly one non-subpage section of its own."""
    d = Dispatch(render(container((start, MemoryRegion.io("x", size)))))
    pieces = sorted((s.start, s.size) for s in d.sections[1:] if not s.subpage)
    assert pieces[0][0] == start and sum(n for _, n in pieces) == size
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(pieces))


def test_info_mtree_d_appends_the_dispatch_after_the_ranges():
    import memapi
    from memapi import MemoryRegion

    root = MemoryRegion.container("root", 1 << 64)
    root.add_subregion(0xFED00000, MemoryRegion.io("hpet", 0x400))
    space = memapi.AddressSpace(root, "as")
    text = memapi.info_mtree(flatview=True, dispatch=True, spaces=[space])
    assert "hpet\n  Dispatch\n    Physical sections\n" in text and text.endswith("\n\n")
