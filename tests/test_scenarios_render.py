"""Scenarios 1-15 (the number in ``test_NN_``): rendering, priorities, clipping, merging, as docs/memory.md
"Rendering" describes them (pure memapi)."""
from __future__ import annotations

import memapi
from conftest import flat
from memapi import MemoryRegion as MR


def io(name, size):
    return MR.io(name, size, memapi.MemoryRegionOps(read=lambda mr, a, s: 0, write=lambda mr, a, v, s: None))


def docs_example(space_root, b_terminates=False):
    a = MR.container("A", 0x8000)
    c = io("C", 0x6000)
    b = io("B", 0x4000) if b_terminates else MR.container("B", 0x4000)
    b.add_subregion(0, io("D", 0x1000))
    b.add_subregion(0x2000, io("E", 0x1000))
    a.add_subregion_overlap(0, c, 1)
    a.add_subregion_overlap(0x2000, b, 2)
    space_root.add_subregion(0, a)


def test_01_docs_b_and_c(root, space):
    docs_example(root)
    assert flat(space) == [(0, 0x1FFF, "C", 0, False), (0x2000, 0x2FFF, "D", 0, False),
                           (0x3000, 0x3FFF, "C", 0x3000, False), (0x4000, 0x4FFF, "E", 0, False),
                           (0x5000, 0x5FFF, "C", 0x5000, False)]


def test_01_docs_b_terminating(root, space):
    docs_example(root, b_terminates=True)
    assert flat(space) == [(0, 0x1FFF, "C", 0, False), (0x2000, 0x2FFF, "D", 0, False),
                           (0x3000, 0x3FFF, "B", 0x1000, False), (0x4000, 0x4FFF, "E", 0, False),
                           (0x5000, 0x5FFF, "B", 0x3000, False)]


def test_02_tie_goes_to_newest(root, space):
    x, y = io("X", 0x2000), io("Y", 0x2000)
    root.add_subregion(0, x)
    root.add_subregion(0x1000, y)
    assert flat(space) == [(0, 0xFFF, "X", 0, False), (0x1000, 0x2FFF, "Y", 0, False)]


def test_02_tie_other_order(root, space):
    x, y = io("X", 0x2000), io("Y", 0x2000)
    root.add_subregion(0x1000, y)
    root.add_subregion(0, x)
    assert flat(space) == [(0, 0x1FFF, "X", 0, False), (0x2000, 0x2FFF, "Y", 0x1000, False)]


def test_03_readd_changes_winner(root, space):
    x, y = io("X", 0x2000), io("Y", 0x2000)
    root.add_subregion(0, x)
    root.add_subregion(0x1000, y)
    x.set_address(0x800)
    assert flat(space) == [(0x800, 0x27FF, "X", 0, False), (0x2800, 0x2FFF, "Y", 0x1800, False)]


def test_04_priority_beats_order(root, space):
    x, y = io("X", 0x2000), io("Y", 0x2000)
    root.add_subregion_overlap(0x1000, y, 1)
    root.add_subregion_overlap(0, x, 0)
    assert flat(space) == [(0, 0xFFF, "X", 0, False), (0x1000, 0x2FFF, "Y", 0, False)]


def test_05_background(root, space):
    root.add_subregion_overlap(0, io("bg", 0x10000), -1)
    root.add_subregion(0x200, io("dev", 0x100))
    assert flat(space) == [(0, 0x1FF, "bg", 0, False), (0x200, 0x2FF, "dev", 0, False),
                           (0x300, 0xFFFF, "bg", 0x300, False)]


def test_06_child_beats_terminating_parent(root, space):
    p = MR.ram("p", 0x4000)
    p.add_subregion_overlap(0x1000, io("ch", 0x1000), -5)
    root.add_subregion(0, p)
    assert flat(space) == [(0, 0xFFF, "p", 0, False), (0x1000, 0x1FFF, "ch", 0, False),
                           (0x2000, 0x3FFF, "p", 0x2000, False)]


def test_07_disabled_does_not_obscure(root, space, listeners, calls):
    x, y = io("X", 0x2000), io("Y", 0x2000)
    root.add_subregion_overlap(0x1000, y, 1)
    root.add_subregion_overlap(0, x, 0)
    assert flat(space) == [(0, 0xFFF, "X", 0, False), (0x1000, 0x2FFF, "Y", 0, False)]
    calls.clear()
    y.set_enabled(False)
    assert flat(space) == [(0, 0x1FFF, "X", 0, False)]
    dels = [c[2:] for c in calls if c[0] == "region_del" and c[1] == "L1"]
    adds = [c[2:] for c in calls if c[0] == "region_add" and c[1] == "L1"]
    assert dels == [(0, 0x1000, "X"), (0x1000, 0x2000, "Y")]
    assert adds == [(0, 0x2000, "X")]


def test_08_disabled_container(root, space):
    c = MR.container("c", 0x1000)
    c.add_subregion(0, io("child", 0x100))
    root.add_subregion(0x1000, c)
    c.set_enabled(False)
    assert flat(space) == []
    text = memapi.info_mtree(spaces=[space])
    assert "): c\n" not in text and "(prio 0, i/o): child" in text
    assert "      0000000000001000-00000000000010ff (prio 0, i/o): child" in text.splitlines()


def test_09_alias_clipping(root, space):
    ram = MR.ram("ram", 0x1000)
    root.add_subregion(0x10000, MR.alias("a", ram, 0x800, 0x1000))
    assert flat(space) == [(0x10000, 0x107FF, "ram", 0x800, False)]


def test_10_container_clipping(root, space):
    c = MR.container("c", 0x1000)
    c.add_subregion(0x800, MR.ram("x", 0x2000))
    root.add_subregion(0x4000, c)
    assert flat(space) == [(0x4800, 0x4FFF, "x", 0, False)]


def test_11_alias_of_alias(root, space):
    ram = MR.ram("ram", 0x10000)
    a1 = MR.alias("a1", ram, 0x2000, 0x8000)
    root.add_subregion(0x100000, MR.alias("a2", a1, 0x3000, 0x1000))
    assert flat(space) == [(0x100000, 0x100FFF, "ram", 0x5000, False)]


def test_12_zero_size(root, space):
    root.add_subregion(0x5000, io("empty", 0))
    assert flat(space) == []
    assert "0000000000005000-0000000000005000 (prio 0, i/o): empty" in memapi.info_mtree(spaces=[space])


def test_13_size_2_64(root, space):
    mr = MR.container("big", memapi.UINT64_MAX)
    assert mr.size == 1 << 64 and mr.size_u64 == memapi.UINT64_MAX
    other = memapi.AddressSpace(mr, "big-as")
    assert "  0000000000000000-ffffffffffffffff (prio 0, i/o): big" in memapi.info_mtree(spaces=[other])


def two_aliases(root, second_readonly=False, unmergeable=False):
    ram = MR.ram("ram", 0x2000)
    a = MR.alias("lo", ram, 0, 0x1000)
    b = MR.alias("hi", ram, 0x1000, 0x1000)
    b.set_readonly(second_readonly)
    a.set_unmergeable(unmergeable)
    root.add_subregion(0x10000, a)
    root.add_subregion(0x11000, b)


def test_14_merge(root, space):
    two_aliases(root)
    assert flat(space) == [(0x10000, 0x11FFF, "ram", 0, False)]


def test_14_unmergeable(root, space, listeners, calls):
    two_aliases(root, unmergeable=True)
    assert flat(space) == [(0x10000, 0x10FFF, "ram", 0, False), (0x11000, 0x11FFF, "ram", 0x1000, False)]
    assert [c for c in calls if c[0] == "region_add" and c[1] == "L1"] == [
        ("region_add", "L1", 0x10000, 0x1000, "ram"), ("region_add", "L1", 0x11000, 0x1000, "ram")]


def test_15_no_merge_across_readonly(root, space):
    seen = []

    class Sections(memapi.MemoryListener):
        def region_add(self, s):
            seen.append(s.readonly)

    space.register_listener(Sections())
    two_aliases(root, second_readonly=True)
    assert flat(space) == [(0x10000, 0x10FFF, "ram", 0, False), (0x11000, 0x11FFF, "ram", 0x1000, True)]
    assert seen[-1] is True
    assert "0000000000011000-0000000000011fff (prio 0, rom): ram @0000000000001000" in memapi.info_mtree(
        flatview=True, spaces=[space])
