"""Hostile input: a hypothesis state machine drives the public memapi API with arbitrary calls.

Every rule makes one public call with arguments that are often wrong: garbage types, negative or
oversized numbers, regions in the wrong state, calls out of order (commit without begin,
unregistering a stranger, destroying a space that still has listeners). A call either succeeds,
and then every registered replica listener still rebuilds its space's FlatView exactly; or it
raises a MemApiError, and then the trees, every FlatView, every replica, the registrations and the
transaction and dirty-tracking state are exactly as before. Any other exception fails the test.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import memapi
from memapi import MemoryRegion as MR

U64 = (1 << 64) - 1


def usually(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` five times in six, else ``invalid`` (so trees grow while bad calls stay common)."""
    return st.integers(0, 5).flatmap(lambda n: invalid if n == 5 else valid)


GARBAGE = st.one_of(st.none(), st.booleans(), st.text(max_size=2), st.floats(allow_nan=False),
                    st.binary(max_size=3), st.lists(st.integers(0, 3), max_size=2), st.builds(object))
SMALL = st.one_of(st.integers(0, 0x40).map(lambda n: n * 0x100), st.integers(0, 0x3000))
BAD_NUMBER = st.one_of(st.integers(-(1 << 65), -1), st.integers((1 << 64) + 1, 1 << 70), GARBAGE)
ARG = usually(st.one_of(SMALL, st.sampled_from([U64, 1 << 64, 1 << 63])), BAD_NUMBER)
RAM_SIZE = usually(SMALL, BAD_NUMBER)  # real mmaps: small when valid
FLAG = usually(st.booleans(), st.one_of(GARBAGE, st.integers(-2, 3)))
OPS = memapi.MemoryRegionOps(read=lambda mr, offset, size: offset, write=lambda mr, offset, value, size: None)


class Replica(memapi.MemoryListener):
    """Rebuilds its space's FlatView from region_add/region_del."""

    def __init__(self, name: str) -> None:
        super().__init__(priority=0, name=name)
        self.ranges: dict[int, tuple] = {}

    def region_add(self, s) -> None:
        self.ranges[s.offset_within_address_space] = key(s.offset_within_address_space, s.size, s.mr,
                                                          s.offset_within_region, s.readonly)

    def region_del(self, s) -> None:
        del self.ranges[s.offset_within_address_space]


def key(start: int, size: int, mr: MR, offset: int, readonly: bool) -> tuple:
    return start, size, id(mr), offset, readonly


def region_state(mr: MR) -> tuple:
    return (mr.name, mr.size, mr.addr, mr.priority, mr.enabled, mr.readonly, mr.nonvolatile, mr.unmergeable,
            mr.romd_mode, id(mr.alias_target), mr.alias_offset, mr.alias_mask, id(mr.parent),
            tuple(map(id, mr.subregions)), mr.vga_logging_count, mr.dirty_log_mask, mr.mapped_via_alias,
            tuple(e.sort_key() for e in mr.ioeventfds), tuple(mr.coalesced), mr.flush_coalesced_mmio,
            None if mr.ram_block is None else (mr.ram_block.used_length,
                                                tuple(map(bytes, filter(None, mr.ram_block.dirty)))))


class HostileMemApi(RuleBasedStateMachine):
    """One root, one space with a replica listener and a spare replica; rules grow and poke the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.regions: list[MR] = [MR.container("root", 1 << 64)]
        self.spaces = [memapi.AddressSpace(self.regions[0], "as0")]
        self.replicas = [Replica("r0"), Replica("r1")]
        self.spaces[0].register_listener(self.replicas[0])
        self.depth = 0

    # ------------------------------------------------------------ harness
    def state(self) -> tuple:
        s = memapi.default_system()
        return ((s.depth, s.update_pending, s.ioeventfd_pending, s.global_dirty_tracking),
                [region_state(mr) for mr in self.regions],
                [(space.current_map, [fr.key() for fr in space.current_map], space.destroyed) for space in self.spaces],
                [(id(r.address_space), dict(r.ranges)) for r in self.replicas])

    def call(self, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run one public call: (True, its result), or (False, None) after a MemApiError, which
        must leave everything as it was."""
        before = self.state()
        try:
            return True, fn()
        except memapi.MemApiError:
            assert self.state() == before, "an invalid call changed state before raising"
            return False, None

    def pick(self, data, items: list, garbage: bool = True, prefer: Callable[[Any], bool] | None = None) -> Any:
        """One of ``items``, usually one that ``prefer`` likes; with ``garbage``, now and then something else."""
        liked = [item for item in items if prefer is None or prefer(item)] or items
        choice = usually(st.sampled_from(liked), st.sampled_from(items))
        return data.draw(usually(choice, GARBAGE) if garbage else choice)

    def ram(self, data) -> Any:
        return self.pick(data, self.regions, prefer=lambda mr: mr.ram_block is not None)

    def keep(self, outcome: tuple[bool, Any]) -> None:
        if outcome[0]:
            self.regions.append(outcome[1])

    # ------------------------------------------------------------ constructors
    @initialize(ram_at=st.sampled_from([0, 0x800, 0x1000]), logged=st.booleans())
    def base_tree(self, ram_at: int, logged: bool) -> None:
        """A small map to start from: RAM, an alias of it, MMIO, and a container holding a ROM."""
        root = self.regions[0]
        ram, box = MR.ram("ram", 0x2000), MR.container("box", 0x2000)
        rom, mmio = MR.rom("rom", 0x1000, b"rom"), MR.io("mmio", 0x100, OPS)
        window = MR.alias("window", ram, 0x800, 0x1000)
        self.regions += [ram, box, rom, mmio, window]
        with memapi.transaction():
            root.add_subregion(ram_at, ram)
            root.add_subregion_overlap(0x1800, window, 1)
            root.add_subregion(0x4000, box)
            box.add_subregion(0x800, rom)
            root.add_subregion(0x3000, mmio)
        if logged:
            ram.set_log(True)

    @rule(data=st.data(), kind=st.sampled_from(["container", "io", "reservation", "ram", "rom", "rom_device",
                                                 "resizeable_ram", "alias", "mirror"]),
          name=usually(st.one_of(st.text(max_size=3), st.none()), GARBAGE))
    def create(self, data, kind: str, name: Any) -> None:
        if len(self.regions) > 16:
            return
        size = data.draw(RAM_SIZE if kind in ("ram", "rom", "rom_device", "resizeable_ram") else ARG)
        target = self.pick(data, self.regions)
        make = {
            "container": lambda: MR.container(name, size),
            "io": lambda: MR.io(name, size, data.draw(usually(st.sampled_from([OPS, None]), GARBAGE))),
            "reservation": lambda: MR.reservation(name, size),
            "ram": lambda: MR.ram(name, size),
            "rom": lambda: MR.rom(name, size, data.draw(usually(st.binary(max_size=8), GARBAGE))),
            "rom_device": lambda: MR.rom_device(name, size, data.draw(usually(st.just(OPS), GARBAGE))),
            "resizeable_ram": lambda: MR.resizeable_ram(name, size, data.draw(RAM_SIZE)),
            "alias": lambda: MR.alias(name, target, data.draw(ARG), size, mask=data.draw(usually(st.none(), ARG))),
            "mirror": lambda: MR.mirror(name, target, size),
        }[kind]
        self.keep(self.call(make))

    # ------------------------------------------------------------ tree
    @rule(data=st.data(), overlap=st.booleans())
    def add_subregion(self, data, overlap: bool) -> None:
        holder = self.pick(data, self.regions, garbage=False, prefer=lambda mr: mr.alias_target is None)
        sub = self.pick(data, self.regions, prefer=lambda mr: mr.parent is None and mr is not holder)
        offset = data.draw(usually(SMALL, ARG))
        if overlap:
            self.call(lambda: holder.add_subregion_overlap(offset, sub, data.draw(usually(st.integers(-3, 3), ARG))))
        else:
            self.call(lambda: holder.add_subregion(offset, sub))

    @rule(data=st.data())
    def del_subregion(self, data) -> None:
        sub = self.pick(data, self.regions, prefer=lambda mr: mr.parent is not None)
        holder = getattr(sub, "parent", None) or self.pick(data, self.regions, garbage=False)
        self.call(lambda: holder.del_subregion(sub))

    @rule(data=st.data(), method=st.sampled_from(["set_address", "set_size", "set_alias_offset", "ram_resize"]))
    def set_number(self, data, method: str) -> None:
        mr, value = self.pick(data, self.regions, garbage=False), data.draw(RAM_SIZE)
        self.call(lambda: getattr(mr, method)(value))

    @rule(data=st.data(), method=st.sampled_from(["set_enabled", "set_readonly", "set_nonvolatile", "set_unmergeable",
                                                  "rom_device_set_romd"]))
    def set_flag(self, data, method: str) -> None:
        mr, value = self.pick(data, self.regions, garbage=False), data.draw(FLAG)
        self.call(lambda: getattr(mr, method)(value))

    # ------------------------------------------------------------ dirty logging, eventfds, coalescing
    @rule(data=st.data(), client=usually(st.just(0), st.one_of(st.integers(-1, 3), GARBAGE)))
    def set_log(self, data, client: Any) -> None:
        mr, on = self.pick(data, self.regions, garbage=False), data.draw(FLAG)
        self.call(lambda: mr.set_log(on, client))

    @rule(flags=usually(st.integers(1, 7), st.one_of(st.integers(-1, 9), GARBAGE)), start=st.booleans())
    def global_dirty(self, flags: Any, start: bool) -> None:
        self.call(lambda: (memapi.global_dirty_log_start if start else memapi.global_dirty_log_stop)(flags))

    @rule(data=st.data(), fn=st.sampled_from(["snapshot_and_clear_dirty", "reset_dirty"]))
    def take_dirty(self, data, fn: str) -> None:
        mr, offset, length = self.ram(data), data.draw(usually(SMALL, ARG)), data.draw(usually(SMALL, ARG))
        client = data.draw(usually(st.integers(0, 2), st.one_of(st.just(3), GARBAGE)))
        self.call(lambda: getattr(memapi, fn)(mr, offset, length, client))

    @rule(data=st.data())
    def set_dirty(self, data) -> None:
        mr, offset, length = self.ram(data), data.draw(usually(SMALL, ARG)), data.draw(usually(SMALL, ARG))
        self.call(lambda: memapi.set_dirty(mr, offset, length))

    @rule(data=st.data(), add=st.booleans())
    def eventfd(self, data, add: bool) -> None:
        mr = self.pick(data, self.regions, garbage=False)
        args = (data.draw(ARG), data.draw(usually(st.sampled_from([0, 1, 2, 4, 8]), ARG)), data.draw(FLAG),
                data.draw(ARG), data.draw(usually(st.just(OPS), GARBAGE)))
        self.call(lambda: (mr.add_eventfd if add else mr.del_eventfd)(*args))

    @rule(data=st.data(), how=st.sampled_from(["add", "set", "clear"]))
    def coalescing(self, data, how: str) -> None:
        mr = self.pick(data, self.regions, garbage=False)
        offset, size = data.draw(ARG), data.draw(ARG)
        self.call({"add": lambda: mr.add_coalescing(offset, size), "set": mr.set_coalescing,
                   "clear": mr.clear_coalescing}[how])

    # ------------------------------------------------------------ spaces, listeners, transactions
    @rule(data=st.data(), name=usually(st.text(max_size=3), GARBAGE))
    def new_space(self, data, name: Any) -> None:
        if len(self.spaces) < 3:
            ok, space = self.call(lambda: memapi.AddressSpace(self.pick(data, self.regions), name))
            if ok:
                self.spaces.append(space)

    @rule(data=st.data())
    def destroy_space(self, data) -> None:
        if data.draw(st.integers(0, 3)):
            return
        space = self.pick(data, self.spaces[1:], garbage=False) if len(self.spaces) > 1 else None
        if space is not None:
            self.call(space.destroy)

    @rule(data=st.data(), register=st.booleans())
    def listener(self, data, register: bool) -> None:
        space, replica = self.pick(data, self.spaces, garbage=False), self.pick(data, self.replicas)
        self.call(lambda: (space.register_listener if register else space.unregister_listener)(replica))

    @precondition(lambda self: self.depth < 3)
    @rule()
    def begin(self) -> None:
        assert self.call(memapi.transaction_begin)[0]
        self.depth += 1

    @rule()
    def commit(self) -> None:
        assert self.call(memapi.transaction_commit)[0] == bool(self.depth)  # without a begin: TransactionError
        self.depth = max(0, self.depth - 1)

    # ------------------------------------------------------------ accesses and dumps
    @rule(data=st.data(), how=st.sampled_from(["read", "write", "read_int", "write_int", "store", "load", "lookup"]))
    def access(self, data, how: str) -> None:
        space, addr = self.pick(data, self.spaces, garbage=False), data.draw(ARG)
        size = data.draw(usually(st.integers(0, 8), ARG))
        value = data.draw(usually(st.integers(-1, 1 << 65), GARBAGE))
        payload = data.draw(usually(st.binary(max_size=16), GARBAGE))
        if isinstance(size, int) and size > 0x10000:  # a valid read that large is only slow
            size = 0x10000
        self.call({"read": lambda: space.read(addr, size), "write": lambda: space.write(addr, payload),
                   "read_int": lambda: space.read_int(addr, size),
                   "write_int": lambda: space.write_int(addr, value, size),
                   "store": lambda: space.store(addr, value, size), "load": lambda: space.load(addr, size),
                   "lookup": lambda: space.lookup(addr)}[how])

    @rule()
    def dump(self) -> None:
        live = [s for s in self.spaces if not s.destroyed]
        memapi.info_mtree(flatview=True, spaces=live)
        memapi.info_mtree(disabled=True, owner=True, spaces=live)
        memapi.mtree_json(live)

    # ------------------------------------------------------------ invariant and teardown
    @invariant()
    def replicas_match_their_views(self) -> None:
        if memapi.default_system().depth:
            return
        for replica in self.replicas:
            space = replica.address_space
            if space is not None:
                assert replica.ranges == {fr.start: key(fr.start, fr.size, fr.mr, fr.offset_in_region, fr.readonly)
                                          for fr in space.current_map}, f"{replica.name} differs from {space.name}"

    def teardown(self) -> None:
        for _ in range(self.depth):
            memapi.transaction_commit()
        if memapi.default_system().global_dirty_tracking:
            memapi.global_dirty_log_stop(memapi.default_system().global_dirty_tracking)
        for replica in self.replicas:
            if replica.address_space is not None:
                replica.address_space.unregister_listener(replica)
                assert replica.ranges == {}
        for space in self.spaces:
            space.destroy()
        for mr in self.regions:
            if mr.ram_block is not None:
                mr.ram_block.close()


HostileMemApi.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
test_hostile_memapi = HostileMemApi.TestCase
