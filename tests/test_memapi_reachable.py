"""MemoryRegion.reachable(): a region, its subregions and alias targets, each once, in an order
that depends on the tree alone (migration's RAM list and device search, binding to a system,
the cycle check of add_subregion all filter it)."""
from __future__ import annotations

from memapi import MemoryRegion as MR


def names(regions) -> list[str | None]:
    return [mr.name for mr in regions]


def build(order: list[str]) -> MR:
    """One tree, its regions created in ``order`` (so their ids differ from build to build)."""
    made = {}
    for name in order:
        made[name] = MR.ram(name, 0x1000) if name.startswith("ram") else MR.container(name, 1 << 20)
    root, low, high = made["root"], made["low"], made["high"]
    low.add_subregion_overlap(0, made["ram-a"], 1)
    low.add_subregion(0x1000, made["ram-b"])
    high.add_subregion(0, MR.alias("to-low", low, 0, 0x2000))
    high.add_subregion_overlap(0x2000, MR.alias("to-ram-b", made["ram-b"], 0, 0x1000), 2)
    root.add_subregion_overlap(0, low, 1)
    root.add_subregion(0x100000, high)
    return root


def test_depth_first_in_sibling_order_through_alias_targets_each_once():
    root = build(["root", "low", "high", "ram-a", "ram-b"])
    assert names(root.subregions) == ["low", "high"]  # priority first
    assert names(root.reachable()) == ["root", "low", "ram-a", "ram-b", "high", "to-ram-b", "to-low"]
    high = root.subregions[1]
    assert names(high.reachable()) == ["high", "to-ram-b", "ram-b", "to-low", "low", "ram-a"]


def test_the_order_depends_on_the_tree_not_on_how_it_was_built():
    one = build(["root", "low", "high", "ram-a", "ram-b"])
    other = build(["ram-b", "ram-a", "high", "low", "root"])
    assert names(one.reachable()) == names(other.reachable())


def test_walk_follows_subregions_only():
    root = build(["root", "low", "high", "ram-a", "ram-b"])
    assert names(root.walk()) == ["root", "low", "ram-a", "ram-b", "high", "to-ram-b", "to-low"]
    high = root.subregions[1]
    assert names(high.walk()) == ["high", "to-ram-b", "to-low"]


def test_a_region_not_followed_is_listed_without_what_it_reaches():
    root = build(["root", "low", "high", "ram-a", "ram-b"])
    high = root.subregions[1]
    assert names(high.reachable(follow=lambda mr: mr.alias_target is None)) == ["high", "to-ram-b", "to-low"]
    assert names(root.reachable(follow=lambda mr: False)) == ["root"]
