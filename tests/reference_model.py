"""A brute-force reference model of the memory API, for the property tests.

The model keeps its own shadow copy of every region (``Node``): it never reads
memapi's region objects, sibling lists or FlatViews, so it can judge them.

* Sibling order is recomputed from (priority, add sequence number): descending
  priority, and among equal priorities the most recently added first (QEMU's
  memory_region_update_container_subregions; ``set_address`` to a new address
  inside a container is a re-add, docs/memory.md "Regions").
* ``resolve(root, addr)`` applies the per-address "Visibility" rule of QEMU's
  docs/devel/memory.rst to ONE address: start at the root; try each subregion
  in descending priority order (newest first among equals); if the address
  lies in the subregion's range (clipped by its container, aliases clipped to
  their own size) recurse into it (an alias continues in its target at the
  translated address); the first match wins; a container or alias with no
  match inside falls back to itself only if it terminates. Disabled regions
  are skipped entirely.
* ``flatview_root`` is the shortcut (memory_region_get_flatview_root) that
  QEMU applies to an AddressSpace's root before rendering (docs/memory.md
  "Rendering"). It has consequences (flags on skipped aliases/containers are
  lost, and the chosen region is rendered at its own ``addr``), so the
  reference applies it too, and then resolves addresses from the region it picks.
* ``pending`` follows which calls set QEMU's memory_region_update_pending, i.e.
  make the outermost commit a topology update (and so give listeners one
  begin/commit pair; docs/memory.md "Transactions and listeners").
"""
from __future__ import annotations

from dataclasses import dataclass

ADDR_END = 1 << 64
UINT64_MAX = ADDR_END - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

VGA_BIT = 1 << 0        # DIRTY_MEMORY_VGA
MIGRATION_BIT = 1 << 2  # DIRTY_MEMORY_MIGRATION
GLOBAL_DIRTY_MASK = 0x7

TERMINATING_KINDS = ("ram", "rom", "io")
RAM_KINDS = ("ram", "rom")


def is_u64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT64_MAX


def is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ADDR_END


def norm_size(size: int) -> int:
    """QEMU's size rule: UINT64_MAX means exactly 2**64."""
    return ADDR_END if size == UINT64_MAX else size


class Node:
    """Shadow of one MemoryRegion."""

    def __init__(self, name: str, kind: str, size: int, *, target: Node | None = None,
                 alias_offset: int = 0) -> None:
        assert kind in ("container", "ram", "rom", "io", "alias")
        self.name = name
        self.kind = kind
        self.size = norm_size(size)
        self.enabled = True
        self.readonly = kind == "rom"
        self.nonvolatile = False
        self.unmergeable = False
        self.alias = target
        self.alias_offset = alias_offset
        self.container: Node | None = None
        self.addr = 0
        self.priority = 0
        self.seq = 0              # add order among siblings: larger = newer
        self.children: list[Node] = []   # unordered; see Model.ordered_children
        self.vga_count = 0

    @property
    def terminates(self) -> bool:
        return self.kind in TERMINATING_KINDS

    @property
    def has_ram(self) -> bool:
        return self.kind in RAM_KINDS

    def __repr__(self) -> str:
        return f"<Node {self.name}>"


@dataclass(frozen=True)
class Hit:
    """What serves one address: the terminal region, the offset in it, the flags OR-ed along the path."""

    node: Node
    offset: int
    readonly: bool
    nonvolatile: bool
    unmergeable: bool
    path: tuple  # names of the regions visited, root first: identifies one render of the terminal


class Model:
    """Shadow tree + global state, with memapi's rules for errors (docs/reliability.md), pending updates and
    visibility."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._seq = 0
        self.global_dirty = 0
        self.depth = 0
        self.pending = False
        self._order: dict[int, list[Node]] = {}   # id(node) -> ordered children (cleared on link/unlink)

    # ------------------------------------------------------------ building
    def new(self, name: str, kind: str, size: int, target: Node | None = None, alias_offset: int = 0) -> Node:
        node = Node(name, kind, size, target=target, alias_offset=alias_offset)
        self.nodes[name] = node
        return node

    def ordered_children(self, node: Node) -> list[Node]:
        """Descending priority; among equal priorities the most recently added first."""
        order = self._order.get(id(node))
        if order is None:
            order = self._order[id(node)] = sorted(node.children, key=lambda c: (-c.priority, -c.seq))
        return order

    def reaches(self, start: Node, goal: Node) -> bool:
        """goal reachable from start through subregion and alias-target edges."""
        stack, seen = [start], set()
        while stack:
            n = stack.pop()
            if n is goal:
                return True
            if id(n) in seen:
                continue
            seen.add(id(n))
            stack.extend(n.children)
            if n.alias is not None:
                stack.append(n.alias)
        return False

    # ------------------------------------------ expected errors (class names)
    def errors_add(self, container: Node, offset, sub: Node, priority) -> set[str]:
        errs = set()
        if not is_u64(offset) or not isinstance(priority, int) or not INT32_MIN <= priority <= INT32_MAX:
            errs.add("InvalidRangeError")
        if sub.container is not None:
            errs.add("RegionInUseError")
        if container.alias is not None:
            errs.add("AliasSubregionError")
        if sub is container or self.reaches(sub, container):
            errs.add("AliasCycleError")
        return errs

    def errors_del(self, container: Node, sub: Node) -> set[str]:
        return set() if sub.container is container else {"NotASubregionError"}

    def errors_set_address(self, node: Node, addr) -> set[str]:
        return set() if is_u64(addr) else {"InvalidRangeError"}

    def errors_set_size(self, node: Node, size) -> set[str]:
        return set() if is_size(size) else {"InvalidRangeError"}

    def errors_set_alias_offset(self, node: Node, offset) -> set[str]:
        if node.alias is None:
            return {"NotAnAliasError"}
        return set() if is_u64(offset) else {"InvalidRangeError"}

    def errors_set_log(self, node: Node, on: bool) -> set[str]:
        return set() if on or node.vga_count else {"DirtyLogError"}

    def errors_global_stop(self, flags: int) -> set[str]:
        if not flags or flags & ~GLOBAL_DIRTY_MASK or self.global_dirty & flags != flags:
            return {"DirtyLogError"}
        return set()

    # ------------------------------------------------------------ mutations
    def _link(self, container: Node, offset: int, sub: Node) -> None:
        self._seq += 1
        sub.seq = self._seq
        sub.container = container
        sub.addr = offset
        container.children.append(sub)
        self._order.clear()
        self.pending |= container.enabled and sub.enabled

    def _unlink(self, container: Node, sub: Node) -> None:
        sub.container = None
        container.children.remove(sub)
        self._order.clear()
        self.pending |= container.enabled and sub.enabled

    def add(self, container: Node, offset: int, sub: Node, priority: int = 0) -> None:
        sub.priority = priority
        self._link(container, offset, sub)

    def delete(self, container: Node, sub: Node) -> None:
        self._unlink(container, sub)

    def set_address(self, node: Node, addr: int) -> None:
        if addr == node.addr:
            return
        if node.container is None:
            node.addr = addr
            return
        container = node.container
        self._unlink(container, node)
        self._link(container, addr, node)

    def set_enabled(self, node: Node, enabled: bool) -> None:
        if node.enabled != enabled:
            node.enabled = enabled
            self.pending = True

    def set_size(self, node: Node, size: int) -> None:
        size = norm_size(size)
        if size != node.size:
            node.size = size
            self.pending = True

    def set_flag(self, node: Node, attr: str, value: bool) -> None:
        if getattr(node, attr) != value:
            setattr(node, attr, value)
            self.pending |= node.enabled

    def set_alias_offset(self, node: Node, offset: int) -> None:
        if offset != node.alias_offset:
            node.alias_offset = offset
            self.pending |= node.enabled

    def set_log(self, node: Node, on: bool) -> None:
        old = node.vga_count
        node.vga_count += 1 if on else -1
        if bool(old) != bool(node.vga_count):
            self.pending |= node.enabled

    def global_start(self, flags: int) -> bool:
        """Returns True when tracking went from off to on (listeners get log_global_start)."""
        flags &= ~self.global_dirty
        if not flags:
            return False
        old = self.global_dirty
        self.global_dirty |= flags
        if old:
            return False
        self.pending = True
        return True

    def global_stop(self, flags: int) -> bool:
        """Returns True when tracking went off (listeners get log_global_stop)."""
        self.global_dirty &= ~flags
        if self.global_dirty:
            return False
        self.pending = True
        return True

    # ---------------------------------------------------------- rendering
    def dirty_mask(self, node: Node) -> int:
        """memory_region_get_dirty_log_mask under KVM (no TCG): VGA if logged, MIGRATION while tracking."""
        mask = VGA_BIT if node.vga_count else 0
        if self.global_dirty and node.has_ram:
            mask |= MIGRATION_BIT
        return mask

    def flatview_root(self, node: Node | None) -> Node | None:
        """QEMU's memory_region_get_flatview_root."""
        while node is not None and node.enabled:
            if node.alias is not None:
                if node.alias_offset == 0 and node.size >= node.alias.size:
                    node = node.alias
                    continue
            elif not node.terminates:
                enabled = [c for c in node.children if c.enabled]
                if not enabled:
                    return None
                if len(enabled) == 1 and enabled[0].addr == 0 and node.size >= enabled[0].size:
                    node = enabled[0]
                    continue
            return node
        return None

    def resolve(self, root: Node, addr: int) -> Hit | None:
        """The per-address Visibility rule, from the AddressSpace root (after the flatview-root shortcut)."""
        return self.resolver(root)(addr)

    def resolver(self, root: Node):
        """``resolve`` for many addresses of one unchanged tree (the flatview-root shortcut taken once)."""
        start = self.flatview_root(root)
        if start is None:
            return lambda addr: None
        return lambda addr: self._visit(start, 0, 0, ADDR_END, addr, False, False, False, ())

    def _visit(self, n: Node, base: int, lo: int, hi: int, addr: int,
               ro: bool, nv: bool, um: bool, path: tuple) -> Hit | None:
        if not n.enabled:
            return None                      # skipped entirely: hides nothing
        base += n.addr                       # where n's offset 0 sits
        lo, hi = max(lo, base), min(hi, base + n.size)
        if not lo <= addr < hi:              # outside n, as clipped by its container / alias
            return None
        ro, nv, um = ro or n.readonly, nv or n.nonvolatile, um or n.unmergeable
        path += (n.name,)
        if n.alias is not None:
            # continue in the target at the translated address: target offset = addr - base + alias_offset
            target = n.alias
            return self._visit(target, base - n.alias_offset - target.addr, lo, hi, addr, ro, nv, um, path)
        for child in self.ordered_children(n):
            hit = self._visit(child, base, lo, hi, addr, ro, nv, um, path)
            if hit is not None:
                return hit
        if n.terminates:
            return Hit(n, addr - base, ro, nv, um, path)
        return None

    def boundaries(self, root: Node) -> set[int]:
        """Every address where some in-range test of ``resolve`` can change its answer.

        Between two consecutive boundaries every decision of the Visibility rule is the same,
        so the answer is the same region with the offset growing by one per address.
        """
        out = {0, ADDR_END}
        start = self.flatview_root(root)
        if start is None:
            return out
        stack = [(start, 0, 0, ADDR_END)]
        while stack:
            n, base, lo, hi = stack.pop()
            if not n.enabled:
                continue
            base += n.addr
            lo, hi = max(lo, base), min(hi, base + n.size)
            if lo >= hi:
                continue
            out.add(lo)
            out.add(hi)
            if n.alias is not None:
                stack.append((n.alias, base - n.alias_offset - n.alias.addr, lo, hi))
            else:
                stack.extend((c, base, lo, hi) for c in n.children)
        return out
