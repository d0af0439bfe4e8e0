"""Rebuild a QEMU machine's memory map from its `info mtree -D` dump, through memapi's public API.

The -D dump shows every region: range, priority, kind, enabled flag, alias target,
and (as `memory-region:` sections) the trees of alias targets. The `-f` dump of the
same machine supplies the two facts a tree cannot show: which i/o regions with
children have ops of their own (they appear as flat ranges) and the order in which
the address spaces were created (the order of a FlatView's AS lines).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from memapi import AddressSpace, MemoryRegion, MemoryRegionOps, info_mtree, transaction

_M64 = (1 << 64) - 1

#: Readonly aliases: the tree view never shows the flag (PAM's read-only mode alias).
READONLY_ALIASES = {"pam-rom"}

_REGION = re.compile(r"(?P<indent>(?:  )+)(?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) "
                     r"\(prio (?P<prio>-?\d+), (?P<nv>nv-)?(?P<kind>ramd|romd|ram|rom|i/o)\): (?P<rest>.*)")
_ALIAS = re.compile(r"alias (?P<name>.+?) @(?P<target>.+) (?P<offset>[0-9a-f]{16})-[0-9a-f]{16}")
_FLAT_AS = re.compile(r' AS "(?P<name>.*)", root: .*')
_FLAT_RANGE = re.compile(r"  [0-9a-f]{16}-[0-9a-f]{16} \(prio -?\d+, [^)]+\): (?P<name>.+?)(?: @[0-9a-f]{16})?")

_CONSTRUCTORS = {
    "ram": MemoryRegion.ram,
    "rom": MemoryRegion.rom,
    "romd": lambda name, size: MemoryRegion.rom_device(name, size, MemoryRegionOps()),
    "ramd": lambda name, size: MemoryRegion.ram_device(name, size, bytearray(size)),
}


@dataclass(eq=False)
class Node:
    """One printed region line. ``addr`` is the offset in the parent (a section root: its printed start)."""

    name: str
    addr: int
    size: int
    priority: int
    kind: str
    nonvolatile: bool
    enabled: bool
    alias: str | None = None
    alias_offset: int = 0
    children: list[Node] = field(default_factory=list)

    @cached_property
    def key(self) -> tuple:
        """All the dump says about this subtree: nodes with equal keys may be one region printed twice."""
        return (self.name, self.addr, self.size, self.priority, self.kind, self.nonvolatile, self.enabled,
                self.alias, self.alias_offset, tuple(c.key for c in self.children))

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


def _node(m: re.Match, addr: int) -> Node:
    rest = m["rest"]
    enabled = not rest.endswith(" [disabled]")
    rest = rest.removesuffix(" [disabled]")
    alias = _ALIAS.fullmatch(rest)
    # The end is inclusive, so a size of 0 prints like a size of 1: we take 1.
    size = ((int(m["end"], 16) - int(m["start"], 16)) & _M64) + 1
    return Node(alias["name"] if alias else rest, addr, size, int(m["prio"]), m["kind"], bool(m["nv"]), enabled,
                alias["target"] if alias else None, int(alias["offset"], 16) if alias else 0)


def parse_tree(text: str) -> list[tuple[str, list[str], Node]]:
    """Sections of a `-D` dump: (header, names, root), header "address-space" or "memory-region"."""
    sections = []
    for block in text.strip("\n").split("\n\n"):
        headers, stack = [], []  # stack of (depth, printed start, node)
        for line in block.splitlines():
            m = _REGION.fullmatch(line)
            if m is None:
                assert not stack, f"header after region lines: {line!r}"
                headers.append(line.split(": ", 1))
                continue
            depth, start = len(m["indent"]) // 2, int(m["start"], 16)
            while stack and stack[-1][0] >= depth:
                stack.pop()
            assert depth == (stack[-1][0] + 1 if stack else 1), f"bad indent: {line!r}"
            node = _node(m, (start - stack[-1][1]) & _M64 if stack else start)
            if stack:
                stack[-1][2].children.append(node)
            else:
                root = node
            stack.append((depth, start, node))
        kinds = {kind for kind, _ in headers}
        assert len(kinds) == 1 and stack, f"malformed section: {block[:80]!r}"
        sections.append((kinds.pop(), [name for _, name in headers], root))
    return sections


def _trees_and_targets(as_roots: list[Node], sections: dict[str, Node]) -> tuple[list[Node], dict[str, Node]]:
    """The trees to build, and the node each alias target name stands for.

    A `memory-region:` section reprints a region already printed elsewhere (an AS
    tree, or inside another section) with an identical subtree, or else shows a
    region reachable only through aliases (pc.ram, smram): then it is its definition.
    """
    printed = [n for r in as_roots for n in r.walk()]
    printed += [n for r in sections.values() for n in r.walk() if n is not r]
    trees = as_roots + [r for r in sections.values() if not any(n.key == r.key for n in printed)]
    nodes = [n for tree in trees for n in tree.walk()]
    targets = {}
    for name, section in sections.items():
        matches = [n for n in nodes if n.key == section.key]
        if len(matches) != 1:
            raise ValueError(f"alias target {name!r} matches {len(matches)} printed regions")
        targets[name] = matches[0]
    return trees, targets


def _new_region(node: Node, target: MemoryRegion | None, terminating: set[str]) -> MemoryRegion:
    if target is not None:
        mr = MemoryRegion.alias(node.name, target, node.alias_offset, node.size)
        mr.set_readonly(node.name in READONLY_ALIASES)
    elif node.kind in _CONSTRUCTORS:
        mr = _CONSTRUCTORS[node.kind](node.name, node.size)
    elif node.children and node.name not in terminating:
        mr = MemoryRegion.container(node.name, node.size)
    else:
        mr = MemoryRegion.io(node.name, node.size)
    mr.set_nonvolatile(node.nonvolatile)
    mr.set_enabled(node.enabled)
    return mr


@dataclass
class Machine:
    spaces: list[AddressSpace]
    regions: dict[Node, MemoryRegion]

    def info_mtree(self, **kwargs) -> str:
        return info_mtree(spaces=self.spaces, **kwargs)

    def destroy(self) -> None:
        for space in self.spaces:
            space.destroy()


def build_machine(tree_d: str, flat: str) -> Machine:
    """Rebuild the regions of an `info mtree -D` dump, and its address spaces in `-f` order."""
    sections = parse_tree(tree_d)
    as_roots = {name: root for header, names, root in sections if header == "address-space" for name in names}
    target_sections = [(names[0], root) for header, names, root in sections if header == "memory-region"]
    if len(dict(target_sections)) != len(target_sections):
        raise ValueError("two alias targets share a name")
    group_roots = [root for header, _, root in sections if header == "address-space"]
    trees, targets = _trees_and_targets(group_roots, dict(target_sections))

    flat_lines = flat.splitlines()
    terminating = {m["name"] for line in flat_lines if (m := _FLAT_RANGE.fullmatch(line))}
    order = [m["name"] for line in flat_lines if (m := _FLAT_AS.fullmatch(line))]
    if sorted(order) != sorted(as_roots):
        raise ValueError(f"-f lists address spaces {sorted(order)}, the tree {sorted(as_roots)}")

    regions: dict[Node, MemoryRegion] = {}

    def region(node: Node) -> MemoryRegion:
        if node not in regions:
            target = region(targets[node.alias]) if node.alias is not None else None
            regions[node] = _new_region(node, target, terminating)
        return regions[node]

    with transaction():
        for node in (n for tree in trees for n in tree.walk()):
            mr = region(node)
            # Among equal (address, priority) siblings the newest prints first: add in reverse.
            for child in reversed(node.children):
                if child.priority:
                    mr.add_subregion_overlap(child.addr, region(child), child.priority)
                else:
                    mr.add_subregion(child.addr, region(child))
    return Machine([AddressSpace(region(as_roots[name]), name) for name in order], regions)
