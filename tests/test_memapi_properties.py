"""Property tests of memapi against a brute-force reference model (tests/reference_model.py).

Each example drives memapi with a random program (drawn step by step with ``data()``) and mirrors every
call on a shadow model that never looks at memapi's own sibling lists or FlatViews:

1. ``test_flatview_matches_reference``: random trees of containers, RAM/ROM and I/O regions, aliases of
   aliases, overlaps with negative and positive priorities, disabled and readonly regions, 2**64-sized
   regions, nested transactions mixing add/del/set_address/set_enabled/set_size/set_alias_offset/
   set_readonly/.../priority changes, VGA logging and global dirty tracking. After every outermost
   commit with a pending change (memory_region_transaction_commit; other commits must leave every
   view untouched), every
   AddressSpace's FlatView must serve each address exactly as the per-address Visibility rule says
   (region, offset, readonly/nonvolatile/unmergeable, dirty mask) over the whole 2**64 space (checked
   once per elementary interval of the reference, which is equivalent), must be sorted,
   non-overlapping and fully simplified (unmergeable pieces split exactly where renders differ), and
   memapi's regions (sizes, flags, containers, sibling order) must equal the model's. At the end of
   each example every address below ``SMALL`` is also resolved one by one.
2. ``test_listener_stream_rebuilds_flatview``: replica listeners (one fixed, two that come and go on
   two address spaces) rebuild the FlatView from the callback stream; the stream is checked against
   docs/memory.md "Transactions and listeners" (QEMU's memory_region_transaction_commit and
   address_space_update_topology_pass): one begin/commit pair per outermost commit with a pending
   change and no callbacks otherwise, dels before adds per AS, ASes in creation order, listener order
   forward/reverse per callback, exact del/add/nop sets, log_start/log_stop masks, register/unregister
   replays.
3. ``test_invalid_calls_change_nothing``: the same programs with many invalid calls mixed in; each one
   must raise the right MemApiError subclass and leave views, regions, listeners and the
   transaction state exactly as they were.

4. ``test_equal_priority_listeners_keep_registration_order``: regression test for the one memapi bug
   these properties found (fixed since).

Each example starts from fresh regions, address spaces and listeners and ends with depth 0, global
dirty tracking stopped, every listener unregistered (its replica must then be empty) and its address
spaces destroyed. On a failure the shrunk program is printed as plain memapi calls (hypothesis ``note``).
"""
from __future__ import annotations

import contextlib
import functools
import itertools

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import memapi
from memapi import MemoryRegion as MR
from reference_model import ADDR_END, INT32_MAX, INT32_MIN, UINT64_MAX, Model, Node

SMALL = 0x400      # addresses of the small space (most offsets are below it)
MAX_SIZE = 0x200   # most region sizes are 0..MAX_SIZE, so overlaps are common
KIND_PREFIX = {"container": "c", "ram": "ram", "rom": "rom", "io": "io", "alias": "a"}

# Ops and their weights (the first entry is what hypothesis shrinks towards).
TOPOLOGY_OPS = (["new"] * 10 + ["add"] * 4 + ["txn"] * 3 + ["del"] * 2 + ["set_address"] * 2
                + ["set_enabled"] * 2 + ["set_size"] * 2 + ["set_alias_offset"] + ["set_flag"] * 2
                + ["set_priority"] * 2 + ["set_log"] + ["global_dirty"] + ["new_space"] + ["alias_pair"])
LISTENER_OPS = ["register"] * 2 + ["unregister"]
INVALID_OPS = ["invalid"] * 6


# --------------------------------------------------------------------------- listener
class ReplicaListener(memapi.MemoryListener):
    """Rebuilds its address space's FlatView from callbacks; asserts each callback is consistent."""

    def __init__(self, name: str, priority: int, events: list) -> None:
        super().__init__(priority=priority, name=name)
        self.events = events
        self.replica: dict[int, tuple] = {}   # start -> (start, size, mr, offset, ro, nv, um)
        self.masks: dict[int, int] = {}       # start -> dirty-log mask as told by the callbacks
        self.replaying = False                # inside register_listener's replay
        self.checking = True
        self.in_batch = False
        self.global_on = False
        self.last_section = None              # (kind, start) of the last region callback

    @staticmethod
    def key(s) -> tuple:
        return (s.offset_within_address_space, s.size, s.mr, s.offset_within_region,
                s.readonly, s.nonvolatile, s.unmergeable)

    def _rec(self, kind, key=None, extra=None):
        self.events.append((self.name, kind, key, extra))

    def _section(self, s) -> tuple:
        if self.checking:
            assert self.in_batch, f"{self.name}: section callback outside begin/commit"
            assert s.fv is self.address_space.current_map, "section.fv must be the AS's current (old) view"
        return self.key(s)

    def begin(self):
        if self.checking:
            assert not self.in_batch, f"{self.name}: nested begin"
        self.in_batch = True
        self._rec("begin")

    def commit(self):
        if self.checking:
            assert self.in_batch, f"{self.name}: commit without begin"
        self.in_batch = False
        self._rec("commit")

    def region_add(self, s):
        k = self._section(s)
        if self.checking:
            start, size = k[0], k[1]
            assert size > 0, f"{self.name}: empty section added {s!r}"
            for other in self.replica.values():
                assert other[0] + other[1] <= start or start + size <= other[0], \
                    f"{self.name}: region_add {s!r} overlaps replica range {other!r}"
        self.replica[k[0]] = k
        # QEMU's flatrange_equal ignores the mask: a new range gets no log_start; the listener reads the
        # mask from the region (like KVM).
        # The registration replay, by contrast, sends log_start(0, mask) after the add.
        self.masks[k[0]] = 0 if self.replaying else s.mr.effective_dirty_log_mask
        self.last_section = ("add", k[0])
        self._rec("add", k)

    def region_del(self, s):
        k = self._section(s)
        if self.checking:
            assert self.replica.get(k[0]) == k, f"{self.name}: region_del of {s!r} not in the replica"
        self.replica.pop(k[0], None)
        self.masks.pop(k[0], None)
        self.last_section = ("del", k[0])
        self._rec("del", k)

    def region_nop(self, s):
        k = self._section(s)
        if self.checking:
            assert self.replica.get(k[0]) == k, f"{self.name}: region_nop of {s!r} not in the replica"
        self.last_section = ("nop", k[0])
        self._rec("nop", k)

    def _log(self, kind, s, old, new):
        k = self._section(s)
        if self.checking:
            assert self.replica.get(k[0]) == k, f"{self.name}: {kind} for {s!r} not in the replica"
            if not self.replaying:   # (replays are checked call by call by the test)
                assert self.last_section is not None and self.last_section[1] == k[0], \
                    f"{self.name}: {kind} for {s!r} does not follow its region_nop/region_add"
            assert self.masks[k[0]] == old, f"{self.name}: {kind}(old={old:#x}) but the mask was {self.masks[k[0]]:#x}"
            if kind == "log_start":
                assert new & ~old, f"{self.name}: log_start({old:#x}, {new:#x}) starts nothing"
            else:
                assert old & ~new, f"{self.name}: log_stop({old:#x}, {new:#x}) stops nothing"
        # A mask that both gains and loses bits (1 -> 4) gets log_start(old, new) and then
        # log_stop(old, new), as in QEMU: the new mask holds once the second call has come.
        if kind == "log_stop" or not old & ~new:
            self.masks[k[0]] = new
        self._rec(kind, k, (old, new))

    def log_start(self, s, old, new):
        self._log("log_start", s, old, new)

    def log_stop(self, s, old, new):
        self._log("log_stop", s, old, new)

    def log_global_start(self):
        if self.checking:
            assert not self.global_on, f"{self.name}: log_global_start twice"
        self.global_on = True
        self._rec("gstart")
        return True

    def log_global_stop(self):
        if self.checking:
            assert self.global_on, f"{self.name}: log_global_stop while not started"
        self.global_on = False
        self._rec("gstop")


INDEX = st.integers(0, 255)
HUGE_ADDRS = (UINT64_MAX, ADDR_END - 0x100, 1 << 63, SMALL - 1)
HUGE_SIZES = (UINT64_MAX, ADDR_END)


def mostly(usual: st.SearchStrategy, rare: st.SearchStrategy, one_in: int) -> st.SearchStrategy:
    """``usual``, except one draw in ``one_in`` comes from ``rare`` (shrinks towards ``usual``)."""
    return st.tuples(st.integers(0, one_in - 1), usual, rare).map(lambda t: t[2] if t[0] == one_in - 1 else t[1])


PRIORITIES = mostly(st.integers(-3, 3), st.sampled_from([INT32_MAX, INT32_MIN]), 16)
OPTIONAL_PRIORITY = st.one_of(st.none(), PRIORITIES)


@functools.cache
def numbers(limit: int, huge: tuple) -> st.SearchStrategy:
    """0..limit, often a multiple of 0x40 or 0x10 (so ranges meet and merge); 1 in 24 from ``huge``."""
    small = st.one_of(st.integers(0, limit), st.integers(0, limit // 0x40).map(lambda n: n * 0x40),
                      st.integers(0, limit // 0x10).map(lambda n: n * 0x10))
    return mostly(small, st.sampled_from(huge), 24) if huge else small


def view_key(fr) -> tuple:
    return (fr.start, fr.end - fr.start, fr.mr, fr.offset_in_region, fr.readonly, fr.nonvolatile, fr.unmergeable)


def h(value) -> str:
    return hex(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else repr(value)


# ---------------------------------------------------------------------------- harness
class Run:
    """One random program: memapi and the model side by side, checked after every call."""

    def __init__(self, data, *, listeners: bool, invalid: bool, max_ops: int) -> None:
        self.data = data
        self.model = Model()
        self.mrs: dict[str, MR] = {}
        self.trace: list[str] = []
        self.indent = 0
        self.events: list[tuple] = []
        self.mark = 0
        self.spaces: list[tuple[memapi.AddressSpace, Node]] = []
        self.committed: dict[int, object] = {}     # id(space) -> FlatView at the last outermost commit
        self.use_listeners = listeners
        self.max_ops = max_ops
        self.ops = TOPOLOGY_OPS + (LISTENER_OPS if listeners else []) + (INVALID_OPS if invalid else [])
        self.listeners: list[ReplicaListener] = []
        self.order: list[ReplicaListener] = []     # registered listeners, global order (memory_listener_register)
        self.where: dict[str, int] = {}            # listener name -> index of its AS in self.spaces
        self.prev: dict[str, dict] = {}            # listener name -> replica at the last check
        self.counter = 0

    # ------------------------------------------------------------ drawing
    def draw(self, strategy):
        return self.data.draw(strategy)

    def pick(self, items):
        """One of ``items`` (shrinks towards the first), or None if there are none."""
        return items[self.draw(INDEX) % len(items)] if items else None

    def draw_addr(self, within: int = SMALL) -> int:
        """Mostly an offset inside ``within`` bytes (capped to the small space), rarely a huge one."""
        return self.draw(numbers(max(min(within, SMALL), 1) - 1, HUGE_ADDRS))

    def draw_size(self, huge_ok: bool = True, limit: int = MAX_SIZE) -> int:
        return self.draw(numbers(limit, HUGE_SIZES if huge_ok else ()))

    def draw_priority(self) -> int:
        return self.draw(PRIORITIES)

    # ------------------------------------------------------------ trace
    def emit(self, line: str) -> None:
        self.trace.append("    " * self.indent + line)

    def program(self) -> str:
        return "\n".join(["from memapi import *", "from memapi import MemoryRegion"] + self.trace)

    # ------------------------------------------------------------ helpers
    def nodes(self) -> list[Node]:
        return list(self.model.nodes.values())

    def mr(self, node: Node) -> MR:
        return self.mrs[node.name]

    def registered(self) -> list[ReplicaListener]:
        return list(self.order)

    # ------------------------------------------------------------ setup / teardown
    def setup(self) -> None:
        root_size = self.draw(st.sampled_from([UINT64_MAX, ADDR_END, SMALL, 0x300]))
        self.create("container", root_size, name="root")
        self.create_space(self.model.nodes["root"])
        if self.use_listeners:
            # Few priorities, so ties are common: equal priorities keep registration order
            # (memory_listener_register).
            for i in (1, 2, 3):
                self.listeners.append(ReplicaListener(f"L{i}", self.pick([0, 10]), self.events))
                self.emit(f"L{i} = MemoryListener(priority={self.listeners[-1].priority})  # a replica listener")
            self.register(self.listeners[0], 0)

    def finish(self) -> None:
        """Checked teardown: final exhaustive check, stop dirty tracking, unregister, destroy."""
        assert memapi.default_system().depth == 0 and self.model.depth == 0
        # A commit with a pending change but no net change re-renders every view from the current tree.
        root = self.model.nodes["root"]
        self.emit("with transaction():")
        self.emit(f"    root.set_enabled({not root.enabled}); root.set_enabled({root.enabled})")
        with memapi.transaction():
            self.mr(root).set_enabled(not root.enabled)
            self.mr(root).set_enabled(root.enabled)
        self.model.pending = True
        self.settle()
        for space, as_root in self.spaces:
            self.check_every_small_address(space, as_root)
        if self.model.global_dirty:
            self.global_stop(self.model.global_dirty)
        for listener in list(reversed(self.order)):
            self.unregister(listener)
        for space, _ in self.spaces:
            space.destroy()
        self.spaces.clear()
        assert memapi.default_system().global_dirty_tracking == 0
        assert not any(listener in memapi.default_system().listeners_sorted for listener in self.listeners)

    def abort(self) -> None:
        """Best-effort teardown after a failure, so the next example starts clean."""
        state = memapi.default_system()
        for listener in self.listeners:
            listener.checking = False
        state.depth = 0
        state.update_pending = state.ioeventfd_pending = False
        state.global_dirty_tracking = 0
        for space, _ in self.spaces:
            for listener in list(space.listeners):
                with contextlib.suppress(Exception):
                    space.unregister_listener(listener)
            with contextlib.suppress(Exception):
                space.destroy()
        self.spaces.clear()

    def run(self) -> None:
        try:
            self.setup()
            self.block(0)
            self.finish()
        except BaseException:
            note(self.program())
            self.abort()
            raise

    # ------------------------------------------------------------ program
    def block(self, depth: int) -> None:
        for _ in range(self.draw(st.integers(0, 5) if depth else st.integers(self.max_ops // 4, self.max_ops))):
            op = self.pick(self.ops)
            if op == "txn":
                if depth < 3:
                    self.txn(depth)
            else:
                getattr(self, "op_" + op)()

    def txn(self, depth: int) -> None:
        self.emit("with transaction():")
        self.indent += 1
        self.model.depth += 1
        mark = len(self.trace)
        with memapi.transaction():
            self.block(depth + 1)
            if len(self.trace) == mark:
                self.emit("pass")
        self.indent -= 1
        self.model.depth -= 1
        self.settle()

    # ------------------------------------------------------------ valid ops
    def create(self, kind: str, size: int, target: Node = None, offset: int = 0, name: str | None = None) -> Node:
        self.counter += 1
        name = name or f"{KIND_PREFIX[kind]}{self.counter}"
        if kind == "alias":
            mr = MR.alias(name, self.mr(target), offset, size)
            self.emit(f"{name} = MemoryRegion.alias({name!r}, {target.name}, {h(offset)}, {h(size)})")
        else:
            mr = getattr(MR, kind)(name, size)
            self.emit(f"{name} = MemoryRegion.{kind}({name!r}, {h(size)})")
        self.mrs[name] = mr
        node = self.model.new(name, kind, size, target, offset)
        self.check_attrs()
        return node

    def op_new(self) -> None:
        kind = self.pick(["ram", "io", "container", "alias", "ram", "io", "container", "alias", "rom"])
        if kind == "alias":
            target = self.pick(self.nodes())
            node = self.create("alias", self.draw_size(), target, self.draw_addr(target.size))
        elif kind == "container":
            node = self.create(kind, self.draw_size(limit=SMALL))
        else:
            node = self.create(kind, self.draw_size(huge_ok=kind == "io"))  # RAM is really mmapped
        if self.draw(st.integers(0, 3)):
            self.add_somewhere(node)

    def op_alias_pair(self) -> None:
        """Two aliases of one region, side by side with contiguous offsets: they should merge (flatview_simplify)."""
        target = self.pick([n for n in self.nodes() if n.terminates] or self.nodes())
        holder = self.pick([n for n in self.connected() if n.alias is None])
        if holder is None or target is None:
            return
        offset, first, second = self.draw_addr(target.size), self.draw_size(), self.draw_size()
        a = self.create("alias", first, target, offset)
        b = self.create("alias", second, target, (offset + a.size) % ADDR_END)
        where = self.draw_addr(holder.size)
        prio = self.draw(OPTIONAL_PRIORITY)
        if self.model.errors_add(holder, where, a, prio or 0):   # the target contains the holder
            return
        self.add(holder, where, a, prio)
        if not self.model.errors_add(holder, (where + a.size) % ADDR_END, b, prio or 0):
            self.add(holder, (where + a.size) % ADDR_END, b, prio)
        flag = self.pick([None, "unmergeable", "readonly"])
        if flag is not None:
            node = self.pick([a, b, target])
            self.emit(f"{node.name}.set_{flag}(True)")
            getattr(self.mr(node), "set_" + flag)(True)
            self.model.set_flag(node, flag, True)
            self.settle()

    def pick_mutable(self) -> Node:
        """Any region but the root of as1, which is only picked now and then."""
        if self.draw(st.integers(0, 31)) == 31:
            return self.model.nodes["root"]
        return self.pick([n for n in self.nodes() if n.name != "root"])

    def connected(self) -> list[Node]:
        """Regions an address space can render: reachable from an AS root."""
        return [n for n in self.nodes() if any(self.model.reaches(root, n) for _, root in self.spaces)]

    def op_add(self) -> None:
        free = [n for n in self.nodes() if n.container is None and n.name != "root"]
        sub = self.pick(free)
        if sub is None:
            return
        self.add_somewhere(sub)

    def add_somewhere(self, sub: Node) -> None:
        holders = [n for n in self.nodes() if n.alias is None and not self.model.reaches(sub, n)]
        # mostly into the part of the forest that address spaces render
        linked = [n for n in holders if n in self.connected()]
        holder = self.pick(linked if linked and self.draw(st.integers(0, 3)) else holders)
        if holder is None:
            return
        offset = self.draw_addr(holder.size)
        prio = self.draw(OPTIONAL_PRIORITY)   # None: add_subregion (priority 0)
        self.add(holder, offset, sub, prio)

    def add(self, holder: Node, offset: int, sub: Node, prio) -> None:
        assert not self.model.errors_add(holder, offset, sub, prio or 0)
        if prio is None:
            self.emit(f"{holder.name}.add_subregion({h(offset)}, {sub.name})")
            self.mr(holder).add_subregion(offset, self.mr(sub))
        else:
            self.emit(f"{holder.name}.add_subregion_overlap({h(offset)}, {sub.name}, {prio})")
            self.mr(holder).add_subregion_overlap(offset, self.mr(sub), prio)
        self.model.add(holder, offset, sub, prio or 0)
        self.settle()

    def op_del(self) -> None:
        sub = self.pick([n for n in self.nodes() if n.container is not None])
        if sub is not None:
            self.delete(sub)

    def delete(self, sub: Node) -> None:
        holder = sub.container
        self.emit(f"{holder.name}.del_subregion({sub.name})")
        self.mr(holder).del_subregion(self.mr(sub))
        self.model.delete(holder, sub)
        self.settle()

    def op_set_address(self) -> None:
        node = self.pick([n for n in self.nodes() if n.name != "root"])
        if node is None:
            return
        addr = self.draw_addr()
        self.emit(f"{node.name}.set_address({h(addr)})")
        self.mr(node).set_address(addr)
        self.model.set_address(node, addr)
        self.settle()

    def op_set_enabled(self) -> None:
        node = self.pick_mutable()
        if node is None:
            return
        value = self.draw(st.booleans())
        self.emit(f"{node.name}.set_enabled({value})")
        self.mr(node).set_enabled(value)
        self.model.set_enabled(node, value)
        self.settle()

    def op_set_size(self) -> None:
        node = self.pick_mutable()
        if node is None:
            return
        size = self.draw_size(limit=SMALL if node.kind == "container" else MAX_SIZE)
        self.emit(f"{node.name}.set_size({h(size)})")
        self.mr(node).set_size(size)
        self.model.set_size(node, size)
        self.settle()

    def op_set_alias_offset(self) -> None:
        node = self.pick([n for n in self.nodes() if n.alias is not None])
        if node is None:
            return
        offset = self.draw_addr()
        self.emit(f"{node.name}.set_alias_offset({h(offset)})")
        self.mr(node).set_alias_offset(offset)
        self.model.set_alias_offset(node, offset)
        self.settle()

    def op_set_flag(self) -> None:
        node = self.pick_mutable()
        if node is None:
            return
        attr = self.pick(["readonly", "unmergeable", "nonvolatile"])
        value = self.draw(st.booleans())
        self.emit(f"{node.name}.set_{attr}({value})")
        getattr(self.mr(node), "set_" + attr)(value)
        self.model.set_flag(node, attr, value)
        self.settle()

    def op_set_priority(self) -> None:
        """There is no set_priority: del_subregion + add_subregion_overlap at the same address."""
        node = self.pick([n for n in self.nodes() if n.container is not None])
        if node is None:
            return
        holder, addr, prio = node.container, node.addr, self.draw_priority()
        wrapped = self.draw(st.booleans())
        if wrapped:
            self.emit("with transaction():")
            self.indent += 1
            self.model.depth += 1
            with memapi.transaction():
                self.delete(node)
                self.add(holder, addr, node, prio)
            self.indent -= 1
            self.model.depth -= 1
            self.settle()
        else:
            self.delete(node)
            self.add(holder, addr, node, prio)

    def op_set_log(self) -> None:
        node = self.pick([n for n in self.nodes() if n.has_ram])
        if node is None:
            return
        on = self.draw(st.booleans()) or not node.vga_count
        self.emit(f"{node.name}.set_log({on})")
        self.mr(node).set_log(on)
        self.model.set_log(node, on)
        self.settle()

    def op_global_dirty(self) -> None:
        if self.model.global_dirty and self.draw(st.booleans()):
            flags = self.draw(st.integers(1, 7)) & self.model.global_dirty or self.model.global_dirty
            self.global_stop(flags)
        else:
            flags = self.draw(st.integers(1, 7))
            self.emit(f"global_dirty_log_start({flags})")
            assert memapi.global_dirty_log_start(flags)
            started = self.model.global_start(flags)
            self.settle(gstart=started)

    def global_stop(self, flags: int) -> None:
        self.emit(f"global_dirty_log_stop({flags})")
        memapi.global_dirty_log_stop(flags)
        stopped = self.model.global_stop(flags)
        self.settle(gstop=stopped)

    def op_new_space(self) -> None:
        if len(self.spaces) >= 2:
            return
        self.create_space(self.pick(self.nodes()))

    def create_space(self, root: Node) -> None:
        name = f"as{len(self.spaces) + 1}"
        self.emit(f"{name} = AddressSpace({root.name}, {name!r})")
        space = memapi.AddressSpace(self.mr(root), name)
        self.spaces.append((space, root))
        self.committed[id(space)] = space.current_map
        # Not checked here: a new space may share a view rendered at the last commit (see settle).

    # ------------------------------------------------------------ listeners
    def op_register(self) -> None:
        listener = self.pick([listener for listener in self.listeners if listener.address_space is None])
        if listener is not None:
            self.register(listener, self.draw(st.integers(0, len(self.spaces) - 1)))

    def op_unregister(self) -> None:
        listener = self.pick([listener for listener in self.order if listener is not self.listeners[0]])
        if listener is not None:
            self.unregister(listener)

    def register(self, listener: ReplicaListener, index: int) -> None:
        space = self.spaces[index][0]
        self.emit(f"{space.name}.register_listener({listener.name})")
        listener.replaying = True
        space.register_listener(listener)
        listener.replaying = False
        # QEMU inserts a listener after every registered listener of equal priority (memory_listener_register).
        pos = next((i for i, o in enumerate(self.order) if o.priority > listener.priority), len(self.order))
        self.order.insert(pos, listener)
        self.where[listener.name] = index
        self.settle_replay(listener, space, adding=True)

    def unregister(self, listener: ReplicaListener) -> None:
        space = self.spaces[self.where[listener.name]][0]
        self.emit(f"{space.name}.unregister_listener({listener.name})")
        listener.replaying = True
        space.unregister_listener(listener)
        listener.replaying = False
        self.order.remove(listener)
        del self.where[listener.name]
        listener.global_on = False   # QEMU's unregister sends no log_global_stop
        self.settle_replay(listener, space, adding=False)

    # ------------------------------------------------------------ invalid ops
    def op_invalid(self) -> None:
        kind = self.pick(["in_use", "del_wrong", "cycle", "add_to_alias", "bad_offset", "bad_priority",
                          "bad_address", "bad_size", "bad_alias_offset", "not_alias", "bad_ctor",
                          "register_twice", "set_log_off", "global_stop"])
        bad_u64 = self.draw(st.sampled_from([-1, ADDR_END, -(1 << 64), 1 << 70]))
        nodes = self.nodes()
        m = self.model
        if kind == "in_use":
            sub = self.pick([n for n in nodes if n.container is not None])
            holder = self.pick([n for n in nodes if n.alias is None])
            if sub is None:
                return
            offset = self.draw_addr()
            self.expect_error(m.errors_add(holder, offset, sub, 0),
                              f"{holder.name}.add_subregion({h(offset)}, {sub.name})",
                              lambda: self.mr(holder).add_subregion(offset, self.mr(sub)))
        elif kind == "del_wrong":
            holder = self.pick(nodes)
            sub = self.pick([n for n in nodes if n.container is not holder])
            if sub is None:
                return
            self.expect_error(m.errors_del(holder, sub), f"{holder.name}.del_subregion({sub.name})",
                              lambda: self.mr(holder).del_subregion(self.mr(sub)))
        elif kind == "cycle":
            free = [n for n in nodes if n.container is None and n.name != "root"]
            sub = self.pick(free)
            if sub is None:
                return
            holders = [n for n in nodes if n.alias is None and m.reaches(sub, n)]
            if not holders:
                # make one: a new alias of some region, to be added inside that region
                target = self.pick([n for n in nodes if n.alias is None])
                sub = self.create("alias", self.draw_size(), target, self.draw_addr())
                holders = [n for n in nodes if n.alias is None and m.reaches(sub, n)]
            holder = self.pick(holders)
            offset = self.draw_addr()
            self.expect_error(m.errors_add(holder, offset, sub, 0),
                              f"{holder.name}.add_subregion({h(offset)}, {sub.name})",
                              lambda: self.mr(holder).add_subregion(offset, self.mr(sub)))
        elif kind == "add_to_alias":
            holder = self.pick([n for n in nodes if n.alias is not None])
            sub = self.pick([n for n in nodes if n.container is None and n.name != "root"])
            if holder is None or sub is None:
                return
            self.expect_error(m.errors_add(holder, 0, sub, 0), f"{holder.name}.add_subregion(0x0, {sub.name})",
                              lambda: self.mr(holder).add_subregion(0, self.mr(sub)))
        elif kind == "bad_offset":
            holder = self.pick([n for n in nodes if n.alias is None])
            sub = self.pick([n for n in nodes if n.container is None and n.name != "root"])
            if sub is None:
                return
            self.expect_error(m.errors_add(holder, bad_u64, sub, 0),
                              f"{holder.name}.add_subregion({bad_u64}, {sub.name})",
                              lambda: self.mr(holder).add_subregion(bad_u64, self.mr(sub)))
        elif kind == "bad_priority":
            holder = self.pick([n for n in nodes if n.alias is None])
            sub = self.pick([n for n in nodes if n.container is None and n.name != "root"])
            if sub is None:
                return
            prio = self.draw(st.sampled_from([INT32_MAX + 1, INT32_MIN - 1, 1 << 40]))
            self.expect_error(m.errors_add(holder, 0, sub, prio),
                              f"{holder.name}.add_subregion_overlap(0x0, {sub.name}, {prio})",
                              lambda: self.mr(holder).add_subregion_overlap(0, self.mr(sub), prio))
        elif kind == "bad_address":
            node = self.pick(nodes)
            self.expect_error(m.errors_set_address(node, bad_u64), f"{node.name}.set_address({bad_u64})",
                              lambda: self.mr(node).set_address(bad_u64))
        elif kind == "bad_size":
            node = self.pick(nodes)
            size = self.draw(st.sampled_from([-1, ADDR_END + 1, 1 << 70]))
            self.expect_error(m.errors_set_size(node, size), f"{node.name}.set_size({size})",
                              lambda: self.mr(node).set_size(size))
        elif kind == "bad_alias_offset":
            node = self.pick([n for n in nodes if n.alias is not None])
            if node is None:
                return
            self.expect_error(m.errors_set_alias_offset(node, bad_u64), f"{node.name}.set_alias_offset({bad_u64})",
                              lambda: self.mr(node).set_alias_offset(bad_u64))
        elif kind == "not_alias":
            node = self.pick([n for n in nodes if n.alias is None])
            self.expect_error(m.errors_set_alias_offset(node, 0), f"{node.name}.set_alias_offset(0x0)",
                              lambda: self.mr(node).set_alias_offset(0))
        elif kind == "bad_ctor":
            size = self.draw(st.sampled_from([-1, ADDR_END + 1]))
            ctor = self.pick(["container", "io", "ram", "alias"])
            if ctor == "alias":
                target = self.pick(nodes)
                self.expect_error({"InvalidRangeError"}, f"MemoryRegion.alias('bad', {target.name}, {bad_u64}, 0x10)",
                                  lambda: MR.alias("bad", self.mr(target), bad_u64, 0x10))
            else:
                self.expect_error({"InvalidRangeError"}, f"MemoryRegion.{ctor}('bad', {size})",
                                  lambda: getattr(MR, ctor)("bad", size))
        elif kind == "register_twice":
            listener = self.pick(self.order)
            if listener is None:
                return
            space = self.spaces[self.draw(st.integers(0, len(self.spaces) - 1))][0]
            self.expect_error({"ListenerError"}, f"{space.name}.register_listener({listener.name})",
                              lambda: space.register_listener(listener))
        elif kind == "set_log_off":
            node = self.pick([n for n in nodes if n.has_ram and not n.vga_count])
            if node is None:
                return
            self.expect_error(m.errors_set_log(node, False), f"{node.name}.set_log(False)",
                              lambda: self.mr(node).set_log(False))
        elif kind == "global_stop":
            flags = self.draw(st.integers(1, 7))
            if not m.errors_global_stop(flags):
                return
            self.expect_error(m.errors_global_stop(flags), f"global_dirty_log_stop({flags})",
                              lambda: memapi.global_dirty_log_stop(flags))

    def expect_error(self, errors: set, line: str, call) -> None:
        assert errors, f"test bug: {line} is a valid call"
        self.emit(f"{line}  # must raise {' or '.join(sorted(errors))}")
        state = memapi.default_system()
        before = (state.depth, state.update_pending, state.global_dirty_tracking,
                  [space.current_map for space, _ in self.spaces],
                  {listener.name: (dict(listener.replica), dict(listener.masks), listener.global_on)
                   for listener in self.listeners},
                  [(listener.name, listener.address_space) for listener in self.listeners])
        mark = len(self.events)
        with pytest.raises(memapi.MemApiError) as info:
            call()
        assert type(info.value).__name__ in errors, f"{line} raised {info.value!r}, expected {errors}"
        after = (state.depth, state.update_pending, state.global_dirty_tracking,
                 [space.current_map for space, _ in self.spaces],
                 {listener.name: (dict(listener.replica), dict(listener.masks), listener.global_on)
                  for listener in self.listeners},
                 [(listener.name, listener.address_space) for listener in self.listeners])
        assert self.events[mark:] == [], f"{line} raised but called listeners: {self.events[mark:]}"
        assert after[0] == before[0], "transaction depth changed"
        assert after[1] == before[1], "update_pending changed"
        assert after[2] == before[2], "global dirty tracking changed"
        assert all(a is b for a, b in zip(after[3], before[3], strict=True)), "a FlatView changed"
        assert after[4] == before[4], "a listener replica changed"
        assert after[5] == before[5], "listener registration changed"
        self.check_attrs()   # no region attribute, container or sibling order changed

    # ------------------------------------------------------------ checks
    def check_attrs(self) -> None:
        """memapi's regions hold exactly the model's state (sibling order included)."""
        for node in self.nodes():
            mr = self.mr(node)
            container = self.mrs[node.container.name] if node.container is not None else None
            assert (mr.size, mr.addr, mr.enabled, mr.readonly, mr.nonvolatile, mr.unmergeable,
                    mr.alias_offset, mr.vga_logging_count) == (
                    node.size, node.addr, node.enabled, node.readonly, node.nonvolatile, node.unmergeable,
                    node.alias_offset, node.vga_count), f"attributes of {node.name} differ from the model"
            assert mr.parent is container, f"container of {node.name}"
            if node.container is not None:
                assert mr.priority == node.priority, f"priority of {node.name}"
            assert [c.name for c in mr.subregions] == [c.name for c in self.model.ordered_children(node)], \
                f"sibling order of {node.name}'s subregions"
        assert memapi.default_system().depth == self.model.depth
        assert memapi.default_system().global_dirty_tracking == self.model.global_dirty

    def take_batch(self) -> list:
        batch = self.events[self.mark:]
        self.mark = len(self.events)
        return batch

    def settle(self, gstart: bool = False, gstop: bool = False) -> None:
        """Check the callbacks of the call just made, and (at depth 0) the new FlatViews."""
        self.check_attrs()
        batch = self.take_batch()
        order = self.registered()
        if gstart:
            n = len(order)
            assert [e[:2] for e in batch[:n]] == [(listener.name, "gstart") for listener in order], \
                "log_global_start must reach every listener, forward, before the update"
            batch = batch[n:]
        if gstop and self.model.depth == 0:
            n = len(order)
            stops = [(listener.name, "gstop") for listener in reversed(order)]
            assert [e[:2] for e in batch[len(batch) - n:]] == stops, \
                "log_global_stop must reach every listener, in reverse, after the update"
            batch = batch[:len(batch) - n]
        if self.model.depth:
            if gstop:
                n = len(order)
                assert [e[:2] for e in batch] == [(listener.name, "gstop") for listener in reversed(order)]
                batch = []
            assert batch == [], f"callbacks inside a transaction: {batch}"
            for space, _ in self.spaces:
                assert space.current_map is self.committed[id(space)], "FlatView changed inside a transaction"
            return
        pending, self.model.pending = self.model.pending, False
        self.check_topology_batch(batch, pending)
        for space, _ in self.spaces:
            self.committed[id(space)] = space.current_map
        if pending:
            # Views are re-rendered only by a commit with a pending change. Without one they stay
            # the same objects (checked above). That matters for one QEMU quirk: a FlatView root is
            # rendered at its own ``addr`` (render_memory_region adds it to the base, and
            # memory_region_get_flatview_root may pick any region), and moving an uncontained region, or
            # adding a region to a disabled container, changes that addr without a pending update.
            self.check_views()
        self.check_replicas()

    def check_topology_batch(self, batch: list, pending: bool) -> None:
        order = self.registered()
        if not pending or not order:
            assert batch == [], f"callbacks without a pending topology change: {batch}"
            if not pending:
                for space, _ in self.spaces:
                    assert space.current_map is self.committed[id(space)], "FlatView replaced without a change"
            return
        n = len(order)
        begins = [(listener.name, "begin") for listener in order]
        assert [e[:2] for e in batch[:n]] == begins, "one begin per listener, forward"
        assert [e[:2] for e in batch[len(batch) - n:]] == [(listener.name, "commit") for listener in order], \
            "one commit per listener, forward, after everything"
        body = batch[n:len(batch) - n]
        assert all(e[1] not in ("begin", "commit") for e in body), "exactly one begin/commit pair per commit"
        as_index = [self.where[e[0]] for e in body]
        assert as_index == sorted(as_index), "address spaces must be updated one by one, in creation order"
        for index in sorted(set(as_index)):
            self.check_as_segment([e for e in body if self.where[e[0]] == index], index)
        # exact sets: del = old - new, add = new - old, nop = old & new, each once per listener
        for listener in order:
            space = self.spaces[self.where[listener.name]][0]
            old = set(self.prev[listener.name].values())
            new = {view_key(fr) for fr in space.current_map}
            mine = [e for e in body if e[0] == listener.name]
            for kind, expected in (("del", old - new), ("add", new - old), ("nop", old & new)):
                got = [e[2] for e in mine if e[1] == kind]
                assert len(got) == len(set(got)) and set(got) == expected, \
                    f"{listener.name}: region_{kind} calls {sorted(got, key=str)} " \
                    f"!= expected {sorted(expected, key=str)}"

    def check_as_segment(self, seg: list, index: int) -> None:
        kinds = [e[1] for e in seg]
        first_other = next((i for i, k in enumerate(kinds) if k != "del"), len(kinds))
        assert "del" not in kinds[first_other:], "every region_del of an AS must come before its adds/nops"
        names = [listener.name for listener in self.order if self.where[listener.name] == index]
        groups: list[list] = []
        for e in seg:
            if groups and (groups[-1][0][1], groups[-1][0][2]) == (e[1], e[2]):
                groups[-1].append(e)
            else:
                groups.append([e])
        last_del = last_other = -1
        for g in groups:
            kind, start = g[0][1], g[0][2][0]
            expected = list(reversed(names)) if kind in ("del", "log_stop") else names
            assert [e[0] for e in g] == expected, f"{kind} at {start:#x}: listener order {[e[0] for e in g]}"
            if kind == "del":
                assert start > last_del, "region_del calls must go in ascending address order"
                last_del = start
            else:
                assert start >= last_other, "region_add/nop calls must go in ascending address order"
                last_other = start

    def settle_replay(self, listener: ReplicaListener, space, adding: bool) -> None:
        """register/unregister: a replay of the space's current view to that listener only (memory_listener_register and
        memory_listener_unregister)."""
        self.check_attrs()
        batch = self.take_batch()
        expected = [(listener.name, "begin")]
        if adding and self.model.global_dirty:
            expected.append((listener.name, "gstart"))
        for fr in space.current_map:
            if adding:
                expected.append((listener.name, "add", view_key(fr)))
                if fr.dirty_log_mask:
                    expected.append((listener.name, "log_start", view_key(fr), (0, fr.dirty_log_mask)))
            else:
                if fr.dirty_log_mask:
                    expected.append((listener.name, "log_stop", view_key(fr), (fr.dirty_log_mask, 0)))
                expected.append((listener.name, "del", view_key(fr)))
        expected.append((listener.name, "commit"))
        got = [e[:2] if e[2] is None else e[:3] if e[3] is None else e for e in batch]
        assert got == expected, f"{'register' if adding else 'unregister'} replay of {listener.name}"
        if adding:
            self.check_replica(listener, space)
        else:
            assert listener.replica == {} and listener.masks == {}, "unregister must delete every range"
        self.prev[listener.name] = dict(listener.replica)

    def check_replica(self, listener: ReplicaListener, space) -> None:
        view = space.current_map
        assert listener.replica == {fr.start: view_key(fr) for fr in view}, \
            f"{listener.name}'s replica differs from {space.name}"
        assert listener.masks == {fr.start: fr.dirty_log_mask for fr in view}, \
            f"{listener.name}'s dirty-log masks differ"

    def check_replicas(self) -> None:
        for listener in self.order:
            self.check_replica(listener, self.spaces[self.where[listener.name]][0])
            self.prev[listener.name] = dict(listener.replica)

    def check_views(self) -> None:
        for space, root in self.spaces:
            self.check_view(space, root)
        # memory_region_get_flatview_root: spaces whose roots resolve to the same region share one FlatView
        for i, (s1, r1) in enumerate(self.spaces):
            for s2, r2 in self.spaces[i + 1:]:
                f1, f2 = self.model.flatview_root(r1), self.model.flatview_root(r2)
                if f1 is f2 and f1 is not None:
                    assert s1.current_map is s2.current_map, f"{s1.name} and {s2.name} must share a FlatView"

    def compare(self, space, resolve, addr: int, fr):
        """The FlatView's range ``fr`` at ``addr`` against the reference; returns the reference's Hit."""
        hit = resolve(addr)
        if hit is None:
            assert fr is None, f"{space.name}: {addr:#x} should be unassigned, FlatView has {fr!r}"
            return None
        assert fr is not None, \
            f"{space.name}: {addr:#x} should be {hit.node.name} @{hit.offset:#x}, FlatView has a hole"
        got = (fr.mr.name, fr.offset_in_region + addr - fr.start, fr.readonly, fr.nonvolatile, fr.unmergeable,
               fr.dirty_log_mask, fr.romd_mode)
        want = (hit.node.name, hit.offset, hit.readonly, hit.nonvolatile, hit.unmergeable,
                self.model.dirty_mask(hit.node), True)
        assert got == want, f"{space.name}: at {addr:#x} FlatView gives {got}, reference {want}"
        assert fr.mr is self.mr(hit.node)
        return hit

    def check_view(self, space, root: Node) -> None:
        view = space.current_map
        ranges = view.ranges
        resolve = self.model.resolver(root)
        prev = None
        for fr in ranges:
            assert 0 <= fr.start < fr.end <= ADDR_END, f"bad range {fr!r}"
            assert fr.mr.terminates and fr.mr.alias_target is None, f"{fr!r}: not a terminating region"
            assert 0 <= fr.offset_in_region and fr.offset_in_region + fr.size <= fr.mr.size, \
                f"{fr!r} exceeds its region"
            if prev is not None:
                assert prev.end <= fr.start, f"{prev!r} and {fr!r} overlap or are unsorted"
                if prev.end == fr.start and prev.mr is fr.mr and \
                        prev.offset_in_region + prev.size == fr.offset_in_region and \
                        (prev.dirty_log_mask, prev.romd_mode, prev.readonly, prev.nonvolatile) == \
                        (fr.dirty_log_mask, fr.romd_mode, fr.readonly, fr.nonvolatile):
                    assert prev.unmergeable or fr.unmergeable, f"{prev!r} and {fr!r} should have been merged"
                    # unmergeable pieces stay apart only where they are different renders of the region
                    a = resolve(prev.end - 1)
                    b = resolve(fr.start)
                    assert a is None or b is None or a.path != b.path, \
                        f"{prev!r} and {fr!r} are one render of {fr.mr.name} (path {a.path}) but were split"
            prev = fr
        # Every address of [0, 2**64): between two consecutive boundaries (the reference's decision points
        # plus the FlatView's own range ends) both sides are constant, so one address per piece suffices.
        points = self.model.boundaries(root)
        for fr in ranges:
            points.add(fr.start)
            points.add(fr.end)
        points = sorted(p for p in points if 0 <= p <= ADDR_END)
        for lo, hi in itertools.pairwise(points):
            fr = view.lookup(lo)
            hit = self.compare(space, resolve, lo, fr)
            if hi - 1 != lo:
                self.compare(space, resolve, hi - 1, view.lookup(hi - 1))
            if fr is not None and fr.unmergeable and lo != fr.start:
                # an unmergeable range is one render of its region: never merged with another (flatview_simplify)
                assert hit.path == resolve(fr.start).path, f"{fr!r} merges two renders of an unmergeable region"

    def check_every_small_address(self, space, root: Node) -> None:
        """The literal brute force: each address of the small space resolved on its own."""
        view = space.current_map
        resolve = self.model.resolver(root)
        for addr in range(SMALL):
            self.compare(space, resolve, addr, view.lookup(addr))


# ------------------------------------------------------------------------------ tests
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.filter_too_much])


def run_program(data, **kw) -> None:
    Run(data, **kw).run()


@settings(max_examples=2000, **COMMON)
@given(st.data())
def test_flatview_matches_reference(data):
    run_program(data, listeners=False, invalid=False, max_ops=30)


@settings(max_examples=600, **COMMON)
@given(st.data())
def test_listener_stream_rebuilds_flatview(data):
    run_program(data, listeners=True, invalid=False, max_ops=30)


@settings(max_examples=400, **COMMON)
@given(st.data())
def test_invalid_calls_change_nothing(data):
    run_program(data, listeners=True, invalid=True, max_ops=30)


# ------------------------------------------------ regression: a memapi bug the property test found
class _Order(memapi.MemoryListener):
    def __init__(self, name: str, log: list) -> None:
        super().__init__(priority=0, name=name)
        self.log = log

    def begin(self):
        self.log.append((self.name, "begin"))

    def region_add(self, s):
        self.log.append((self.name, "region_add"))

    def region_del(self, s):
        self.log.append((self.name, "region_del"))


def test_equal_priority_listeners_keep_registration_order():
    """memapi used to order equal-priority listeners by construction; QEMU uses registration
    (memory_listener_register)."""
    log: list = []
    root = MR.container("root", UINT64_MAX)
    space = memapi.AddressSpace(root, "as")
    first, second = _Order("first", log), _Order("second", log)   # both priority 0, built in this order
    try:
        space.register_listener(second)
        space.register_listener(first)
        log.clear()
        ram = MR.ram("ram", 0x1000)
        root.add_subregion(0, ram)
        # QEMU: second was registered first, so it comes first in forward order and last in reverse order
        assert log == [("second", "begin"), ("first", "begin"), ("second", "region_add"), ("first", "region_add")]
        log.clear()
        root.del_subregion(ram)
        assert log == [("second", "begin"), ("first", "begin"), ("first", "region_del"), ("second", "region_del")]
    finally:
        for listener in list(space.listeners):
            space.unregister_listener(listener)
        space.destroy()
