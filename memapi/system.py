"""MemorySystem: one machine's memory core, and the default one short scripts use.

QEMU keeps the transaction depth, the pending flags, the address-space and listener lists,
global dirty tracking and the coalesced flush in memory.c's file-scope globals, which is
safe there because one process is one machine and the big lock serializes it. A library
hosts many machines per process, so each gets a MemorySystem holding all of that, plus its
big lock (an RLock held from transaction begin to the outermost commit, and around every
access to a device with an owner) and the per-owner re-entrancy guard.

Regions join a system when they are first linked under one of its address-space roots
(or with ``adopt``); a region that belongs to none yet is *floating*, and its changes count
against the default system, as every change counts against QEMU's globals.
"""
from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from .errors import CrossSystemError, RegionKindError, TransactionError
from .listener import listener_order
from .ops import MemTxResult

if TYPE_CHECKING:
    from .address_space import AddressSpace
    from .flatview import FlatView
    from .listener import MemoryListener
    from .region import MemoryRegion

log = logging.getLogger("memapi")


class MemorySystem:
    """Everything QEMU keeps in memory.c's globals, for one machine."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.lock = threading.RLock()
        self.depth = 0
        self._owner = 0  # while depth > 0: the thread (threading.get_ident) whose transaction is open
        self.update_pending = False
        self.ioeventfd_pending = False
        self.global_dirty_tracking = 0
        self.dirty_log_stopping = False  # the last global stop's commit is collecting bits
        self.listeners_sorted: list[MemoryListener] = []
        #: Accesses the re-entrancy guard refused (a device reached itself from its own callback).
        self.blocked_reentrant = 0
        self._spaces: list[weakref.ref[AddressSpace]] = []
        self._flushers: list[Callable[[], object]] = []
        self._listener_seq = itertools.count()
        #: id() of the owners inside one of their callbacks (taken and dropped under ``lock``).
        self._engaged: set[int] = set()

    def __repr__(self) -> str:
        return f"<MemorySystem {self.name!r} spaces={len(self._spaces)} depth={self.depth}>"

    # ------------------------------------------------------------ members
    def address_spaces(self) -> list[AddressSpace]:
        """Live address spaces in creation order (the system holds them weakly)."""
        alive = [s for s in (ref() for ref in self._spaces) if s is not None]
        if len(alive) != len(self._spaces):
            self._spaces = [weakref.ref(s) for s in alive]
            self.refresh_listeners()
        return alive

    def add_address_space(self, space: AddressSpace) -> None:
        self._spaces.append(weakref.ref(space))

    def remove_address_space(self, space: AddressSpace) -> None:
        self._spaces = [r for r in self._spaces if r() is not None and r() is not space]
        self.refresh_listeners()

    def refresh_listeners(self) -> None:
        """The system's listener list: by priority, ties in registration order."""
        listeners = [listener for ref in self._spaces if (s := ref()) is not None for listener in s.listeners]
        self.listeners_sorted = sorted(listeners, key=listener_order)

    def next_listener_seq(self) -> int:
        return next(self._listener_seq)

    def adopt(self, *regions: MemoryRegion) -> None:
        """Bind floating regions, and every floating region they reach, to this system before they are
        linked under one of its roots, so their changes batch with its transactions from the start.
        All or nothing: CrossSystemError if any of them reaches a region of another system."""
        from .region import MemoryRegion

        for mr in regions:
            if not isinstance(mr, MemoryRegion):
                raise RegionKindError(f"memory system {self.name!r}: cannot adopt {mr!r}, not a MemoryRegion")
        joining = [region for mr in regions for region in bindable(mr, self, "MemorySystem.adopt")]
        with self.lock:
            for region in joining:
                region.system = self

    # ------------------------------------------------------------ transactions
    def begin(self) -> None:
        """memory_region_transaction_begin: take the lock, flush coalesced writes, nest."""
        self.lock.acquire()
        try:
            self.flush_coalesced()
        except BaseException:
            self.lock.release()
            raise
        if self.depth == 0:
            self._owner = threading.get_ident()
        self.depth += 1

    def commit(self) -> None:
        """memory_region_transaction_commit: at depth 0, re-render and notify listeners."""
        if self.depth == 0 or self._owner != threading.get_ident():
            raise TransactionError(
                f"memory system {self.name!r}: transaction_commit without a matching transaction_begin "
                "in this thread")
        try:
            self.depth -= 1
            if self.depth == 0:
                self._commit_outermost()
        finally:
            self.lock.release()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with system.transaction():`` batches every change into one re-render and one listener pass."""
        self.begin()
        try:
            yield
        finally:
            self.commit()

    def _commit_outermost(self) -> None:
        spaces = self.address_spaces()
        if self.update_pending:
            views = _render_all(spaces)
            listeners = list(self.listeners_sorted)
            try:
                for listener in listeners:
                    listener.begin()
                for space in spaces:
                    space._update_topology(views[id(space)])
                    space._update_ioeventfds()
            finally:
                self.update_pending = False
                self.ioeventfd_pending = False
            for listener in listeners:
                listener.commit()
        elif self.ioeventfd_pending:
            try:
                for space in spaces:
                    space._update_ioeventfds()
            finally:
                self.ioeventfd_pending = False

    # ------------------------------------------------------------ coalesced I/O
    def flush_coalesced(self) -> None:
        """Replay queued coalesced writes (every registered flusher, e.g. a KVM ring)."""
        for flusher in list(self._flushers):
            flusher()

    def add_coalesced_flusher(self, fn: Callable[[], object]) -> None:
        self._flushers.append(fn)

    def remove_coalesced_flusher(self, fn: Callable[[], object]) -> None:
        if fn in self._flushers:
            self._flushers.remove(fn)

    # ------------------------------------------------------------ devices
    def forget_exit_paths(self, mr: MemoryRegion) -> None:
        """Drop what the exit path worked out for ``mr``'s ranges (memapi/exit_path.py) after a
        change no render shows, such as its coalesced-flush flag."""
        for space in self.address_spaces():
            for fr in space.current_map.ranges:
                if fr.mr is mr:
                    fr.store_path = fr.load_path = None

    def blocked(self, mr: MemoryRegion, offset: int, size: int, is_write: bool) -> int:
        """QEMU's per-device re-entrancy guard refused an access: ``mr``'s owner is already inside one
        of its own callbacks on this thread. Counted, logged as QEMU logs it; ACCESS_ERROR."""
        self.blocked_reentrant += 1
        log.warning("Blocked re-entrant IO on MemoryRegion: %s at addr: %#x, size %d, %s",
                    mr.name, offset, size, "write" if is_write else "read")
        return int(MemTxResult.ACCESS_ERROR)

    # ------------------------------------------------------------ dirty tracking
    def global_dirty_log_start(self, flags: int) -> bool:
        """memory_global_dirty_log_start: the first reason calls log_global_start, then re-renders."""
        from .dirty import global_start

        return global_start(self, flags)

    def global_dirty_log_stop(self, flags: int) -> None:
        """memory_global_dirty_log_stop: the last reason syncs, re-renders, then log_global_stop (reverse)."""
        from .dirty import global_stop

        global_stop(self, flags)

    def global_dirty_log_sync(self, last_stage: bool = False) -> None:
        """memory_global_dirty_log_sync: every listener's log_sync over all logged ranges."""
        from .dirty import sync

        with self.lock:
            sync(self, None, last_stage)

    # ------------------------------------------------------------ inspection
    def info_mtree(self, flatview: bool = False, owner: bool = False, disabled: bool = False,
                   accel: Any = None, dispatch: bool = False) -> str:
        """`info mtree` of this system's address spaces (see memapi.info_mtree)."""
        from .mtree import info_mtree

        return info_mtree(flatview, owner, disabled, self.address_spaces(), accel, dispatch)


_DEFAULT = MemorySystem("default")


def default_system() -> MemorySystem:
    """The system of floating regions and of address spaces created without ``system=``."""
    return _DEFAULT


def core_of(mr: MemoryRegion) -> MemorySystem:
    """The system ``mr`` belongs to; the default one while it floats."""
    return mr.system or _DEFAULT


def bindable(mr: MemoryRegion, system: MemorySystem, through: str = "an address space root") -> list[MemoryRegion]:
    """The floating regions that join ``system`` when ``mr`` does (it and everything it reaches through
    subregions and alias targets); CrossSystemError if any region in reach belongs to another system.
    Changes nothing. A bound region reaches only regions of its own system, so the walk stops at one."""
    return floating_among(mr.reachable(follow=lambda reached: reached.system is None), mr, system, through)


def floating_among(reached: Iterable[MemoryRegion], mr: MemoryRegion, system: MemorySystem,
                   through: str) -> list[MemoryRegion]:
    """The floating regions of ``reached`` (what ``mr``, joining ``system`` ``through`` a container, a root
    or adopt, reaches); CrossSystemError, naming both regions and both systems and the way in, at the
    first region of another system."""
    floating = []
    for region in reached:
        other = region.system
        if other is None:
            floating.append(region)
        elif other is not system:
            raise CrossSystemError(
                f"region {mr.name!r} cannot join memory system {system.name!r} through {through}: it reaches "
                f"region {region.name!r}, which belongs to memory system {other.name!r}")
    return floating


def _render_all(spaces: list[AddressSpace]) -> dict[int, FlatView]:
    """One new FlatView per distinct flatview root, shared by the spaces that resolve to it."""
    from .flatview import render

    by_root: dict[int | None, FlatView] = {}
    views: dict[int, FlatView] = {}
    for space in spaces:
        root = flatview_root(space.root)
        key = id(root) if root is not None else None
        view = by_root.get(key)
        if view is None:
            view = by_root[key] = render(root)
        views[id(space)] = view
    return views


def flatview_root(mr: MemoryRegion) -> MemoryRegion | None:
    """QEMU's memory_region_get_flatview_root: skip whole-target aliases and single-child containers."""
    while mr.enabled:
        if mr.alias_target is not None:
            if not mr.alias_offset and mr.alias_mask is None and mr.size >= mr.alias_target.size:
                mr = mr.alias_target
                continue
        elif not mr.terminates:
            enabled = [c for c in mr.subregions if c.enabled]
            if not enabled:
                return None
            if len(enabled) == 1 and not enabled[0].addr and mr.size >= enabled[0].size:
                mr = enabled[0]
                continue
        return mr
    return None


# The default system's API, so short scripts need no MemorySystem of their own.
def transaction() -> AbstractContextManager[None]:
    """``with memapi.transaction():`` on the default system."""
    return _DEFAULT.transaction()


def transaction_begin() -> None:
    _DEFAULT.begin()


def transaction_commit() -> None:
    _DEFAULT.commit()


def add_coalesced_flusher(fn: Callable[[], object]) -> None:
    _DEFAULT.add_coalesced_flusher(fn)


def remove_coalesced_flusher(fn: Callable[[], object]) -> None:
    _DEFAULT.remove_coalesced_flusher(fn)


def global_dirty_log_start(flags: int) -> bool:
    return _DEFAULT.global_dirty_log_start(flags)


def global_dirty_log_stop(flags: int) -> None:
    _DEFAULT.global_dirty_log_stop(flags)


def global_dirty_log_sync(last_stage: bool = False) -> None:
    _DEFAULT.global_dirty_log_sync(last_stage)
