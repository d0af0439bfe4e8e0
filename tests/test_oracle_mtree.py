"""memapi's `info mtree` against QEMU 7.2's, for machines rebuilt from QEMU's own `-D` dumps.

tests/data/oracle/NAME.{tree,treeD,flat}.txt are QEMU's `info mtree`, `info mtree -D`
and `info mtree -f` (NAME.cmd: how they were captured). QEMU prints address-space
groups, `memory-region:` sections and FlatViews in hash-table order, so those blocks
are compared as multisets (FlatViews without their "FlatView #N" line); everything
inside a block must match line for line.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from oracle_builder import build_machine, parse_tree

DATA = Path(__file__).parent / "data" / "oracle"
MACHINES = ["pc-128m", "q35-256m", "isapc-32m"]
M64 = (1 << 64) - 1


def oracle(machine: str, view: str) -> str:
    return (DATA / f"{machine}.{view}.txt").read_text()


def blocks(text: str) -> list[str]:
    """The blank-line separated blocks of a dump; each block (the last too) ends with an empty line."""
    assert text.endswith("\n\n"), f"dump does not end with an empty line: {text[-80:]!r}"
    return text[:-2].split("\n\n")


def canonical_tree(text: str) -> list[str]:
    """Address-space groups, then memory-region sections, each sorted: hash order removed."""
    parts = blocks(text)
    is_section = [b.startswith("memory-region: ") for b in parts]
    assert is_section == sorted(is_section), "memory-region sections must follow every address-space group"
    assert all(b.startswith(("address-space: ", "memory-region: ")) for b in parts)
    groups = sorted(b for b, s in zip(parts, is_section, strict=True) if not s)
    sections = sorted(b for b, s in zip(parts, is_section, strict=True) if s)
    return "\n\n".join(groups + sections).splitlines()


def canonical_flat(text: str) -> list[str]:
    """FlatView blocks without their number line, sorted; the numbers must count from 0."""
    parts = [b.split("\n", 1) for b in blocks(text)]
    assert [head for head, _ in parts] == [f"FlatView #{i}" for i in range(len(parts))]
    return "\n\n".join(sorted(body for _, body in parts)).splitlines()


VIEWS = {
    "tree": ({}, canonical_tree),
    "treeD": ({"disabled": True}, canonical_tree),
    "flat": ({"flatview": True}, canonical_flat),
}


@pytest.fixture(params=MACHINES)
def machine(request):
    name = request.param
    built = build_machine(oracle(name, "treeD"), oracle(name, "flat"))
    yield name, built
    built.destroy()


@pytest.mark.parametrize("view", VIEWS)
def test_info_mtree_matches_qemu(machine, view):
    name, built = machine
    kwargs, canonical = VIEWS[view]
    assert canonical(built.info_mtree(**kwargs)) == canonical(oracle(name, view))


def reprint(node, depth: int, base: int, out: list) -> None:
    """Print a parsed node (and its subtree) back in QEMU's -D line format."""
    start, last = (base + node.addr) & M64, node.size - 1
    what = node.name
    if node.alias is not None:
        what = f"alias {node.name} @{node.alias} {node.alias_offset:016x}-{node.alias_offset + last:016x}"
    out.append(f"{'  ' * depth}{start:016x}-{(start + last) & M64:016x} (prio {node.priority}, "
               f"{'nv-' if node.nonvolatile else ''}{node.kind}): {what}{'' if node.enabled else ' [disabled]'}")
    for child in node.children:
        reprint(child, depth + 1, start, out)


@pytest.mark.parametrize("name", MACHINES)
def test_parser_keeps_every_line(name):
    """Re-printing the parsed -D sections gives the file back, so the builder sees the whole dump."""
    lines: list[str] = []
    for header, names, root in parse_tree(oracle(name, "treeD")):
        lines += [f"{header}: {n}" for n in names]
        reprint(root, 1, 0, lines)
        lines.append("")
    assert "\n".join(lines) + "\n" == oracle(name, "treeD")


def test_canonical_forms_ignore_only_block_order():
    tree = "address-space: b\n  x\n\naddress-space: a\n  y\n\nmemory-region: m\n  z\n\n"
    swapped = "address-space: a\n  y\n\naddress-space: b\n  x\n\nmemory-region: m\n  z\n\n"
    assert canonical_tree(tree) == canonical_tree(swapped)
    assert canonical_tree(tree) != canonical_tree(tree.replace("  y", "  w"))
    with pytest.raises(AssertionError):
        canonical_tree("memory-region: m\n  z\n\naddress-space: a\n  y\n\n")
    flat = 'FlatView #0\n AS "a"\n\nFlatView #1\n AS "b"\n\n'
    assert canonical_flat(flat) == canonical_flat('FlatView #0\n AS "b"\n\nFlatView #1\n AS "a"\n\n')
    with pytest.raises(AssertionError):
        canonical_flat('FlatView #1\n AS "a"\n\n')
