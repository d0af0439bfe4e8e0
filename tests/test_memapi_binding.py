"""Regions joining memory systems, pure memapi: through an address-space root, a container of the
system, or MemorySystem.adopt; never two systems, and a refused link changes nothing."""
from __future__ import annotations

import pytest

from memapi import AddressSpace, AliasCycleError, CrossSystemError, MemorySystem, RegionKindError, default_system
from memapi import MemoryRegion as MR

PAGE = 0x1000


def machine(name: str) -> tuple[MemorySystem, MR, MR]:
    """A system with an address space over a root holding one RAM page: (system, root, ram)."""
    system, root, ram = MemorySystem(name), MR.container(f"{name}-root", 1 << 32), MR.ram(f"{name}-ram", PAGE)
    root.add_subregion(0, ram)
    AddressSpace(root, f"{name}-memory", system)
    return system, root, ram


def test_an_alias_into_a_bound_region_inside_it_is_a_cycle():
    system, root, ram = machine("a")
    inner = MR.container("inner", 1 << 20)
    root.add_subregion(0x100000, inner)
    to_root = MR.alias("to-root", root, 0, 1 << 20)
    with pytest.raises(AliasCycleError, match="'to-root' to 'inner'"):
        inner.add_subregion(0, to_root)
    assert inner.subregions == [] and to_root.system is None and to_root.parent is None


def test_a_cycle_is_reported_before_a_region_of_another_system():
    a, a_root, _ = machine("a")
    _, _, b_ram = machine("b")
    tangle = MR.container("tangle", 1 << 20)
    tangle.add_subregion(0, MR.alias("to-a", a_root, 0, PAGE))
    tangle.add_subregion(PAGE, MR.alias("to-b", b_ram, 0, PAGE))  # a floating container may reach b
    with pytest.raises(AliasCycleError):
        a_root.add_subregion(0x100000, tangle)
    assert all(mr.system is None for mr in (tangle, *tangle.subregions))


def test_a_floating_tree_reaching_another_system_cannot_root_a_space():
    _, _, a_ram = machine("a")
    tree = MR.container("tree", 1 << 20)
    tree.add_subregion(0, MR.alias("into-a", a_ram, 0, PAGE))
    b = MemorySystem("b")
    with pytest.raises(CrossSystemError) as info:
        AddressSpace(tree, "b-memory", b)
    assert all(f"'{name}'" in str(info.value) for name in ("tree", "a-ram", "a", "b")), info.value
    assert tree.system is None and tree.subregions[0].system is None and b.address_spaces() == []


def test_adopt_binds_a_floating_tree_before_it_is_linked():
    system, root, ram = machine("vm")
    rom = MR.rom("rom", PAGE)
    device = MR.container("device", 1 << 16)
    device.add_subregion(0, MR.alias("window", rom, 0, PAGE))
    system.adopt(device, ram)  # ram is the system's already: nothing to do for it
    assert {mr.name: mr.system for mr in device.reachable()} == {"device": system, "window": system, "rom": system}
    with device.transaction():  # the device batches with its machine, not with the default system
        assert system.depth == 1 and default_system().depth == 0
    root.add_subregion(0x100000, device)
    assert [fr.mr.name for fr in AddressSpace(root, "again").current_map] == ["vm-ram", "rom"]


def test_adopt_is_all_or_nothing():
    a, _, _ = machine("a")
    _, _, b_ram = machine("b")
    mine, theirs = MR.ram("mine", PAGE), MR.alias("into-b", b_ram, 0, PAGE)
    adopting = r"'into-b' cannot join memory system 'a' through MemorySystem.adopt: it reaches region 'b-ram'"
    with pytest.raises(CrossSystemError, match=adopting):
        a.adopt(mine, theirs)
    assert mine.system is None and theirs.system is None
    with pytest.raises(RegionKindError, match="'not a region'"):
        a.adopt("not a region")
