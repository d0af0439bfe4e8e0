"""Global state of the memory core: the big lock, transactions and commits.

As in QEMU, transactions are global: nested begin/commit pairs, and only the
outermost commit re-renders every FlatView and calls the listeners. A
transaction holds the core's re-entrant lock (QEMU's BQL) from begin to commit,
so another thread's mutators wait, while readers keep using published views.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from .errors import TransactionError

if TYPE_CHECKING:
    from .address_space import AddressSpace
    from .listener import MemoryListener


class CoreState:
    """Everything QEMU keeps in memory.c's file-scope globals."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.update_pending = False
        self.ioeventfd_pending = False
        self.global_dirty_tracking = 0
        self._spaces: list[weakref.ref] = []
        self.listeners_sorted: list["MemoryListener"] = []
        self.coalesced_flushers: list[Callable[[], None]] = []

    def address_spaces(self) -> list["AddressSpace"]:
        """Live address spaces in creation order."""
        alive = [s for s in (ref() for ref in self._spaces) if s is not None]
        if len(alive) != len(self._spaces):
            self._spaces = [weakref.ref(s) for s in alive]
            self.refresh_listeners()
        return alive

    def add_address_space(self, space: "AddressSpace") -> None:
        self._spaces.append(weakref.ref(space))

    def remove_address_space(self, space: "AddressSpace") -> None:
        self._spaces = [r for r in self._spaces if r() is not None and r() is not space]
        self.refresh_listeners()

    def refresh_listeners(self) -> None:
        """The global listener list: by priority, ties in registration order."""
        listeners = [l for ref in self._spaces if (s := ref()) is not None for l in s.listeners]
        self.listeners_sorted = sorted(listeners, key=lambda l: (l.priority, l._seq))


STATE = CoreState()


def flush_coalesced() -> None:
    """Replay queued coalesced writes (every registered flusher, e.g. the KVM ring)."""
    for flusher in list(STATE.coalesced_flushers):
        flusher()


def add_coalesced_flusher(fn: Callable[[], None]) -> None:
    STATE.coalesced_flushers.append(fn)


def remove_coalesced_flusher(fn: Callable[[], None]) -> None:
    if fn in STATE.coalesced_flushers:
        STATE.coalesced_flushers.remove(fn)


def transaction_begin() -> None:
    """memory_region_transaction_begin: take the lock, flush coalesced writes, nest."""
    STATE.lock.acquire()
    try:
        flush_coalesced()
    except BaseException:
        STATE.lock.release()
        raise
    STATE.depth += 1


def transaction_commit() -> None:
    """memory_region_transaction_commit: at depth 0, re-render and notify listeners."""
    state = STATE
    if state.depth == 0 or not state.lock._is_owned():  # type: ignore[attr-defined]
        raise TransactionError("transaction_commit without a matching transaction_begin in this thread")
    try:
        state.depth -= 1
        if state.depth == 0:
            _commit_outermost(state)
    finally:
        state.lock.release()


@contextmanager
def transaction() -> Iterator[None]:
    """``with transaction():`` batches every change into one re-render and one listener pass."""
    transaction_begin()
    try:
        yield
    finally:
        transaction_commit()


def _commit_outermost(state: CoreState) -> None:
    spaces = state.address_spaces()
    if state.update_pending:
        views = _render_all(spaces)
        listeners = list(state.listeners_sorted)
        try:
            for listener in listeners:
                listener.begin()
            for space in spaces:
                space._update_topology(views[id(space)])
                space._update_ioeventfds()
        finally:
            state.update_pending = False
            state.ioeventfd_pending = False
        for listener in listeners:
            listener.commit()
    elif state.ioeventfd_pending:
        try:
            for space in spaces:
                space._update_ioeventfds()
        finally:
            state.ioeventfd_pending = False


def _render_all(spaces: list["AddressSpace"]) -> dict:
    """One new FlatView per distinct flatview root, shared by the spaces that resolve to it."""
    from .flatview import render

    by_root: dict = {}
    views = {}
    for space in spaces:
        root = flatview_root(space.root)
        key = id(root) if root is not None else None
        view = by_root.get(key)
        if view is None:
            view = by_root[key] = render(root)
        views[id(space)] = view
    return views


def flatview_root(mr):
    """QEMU's memory_region_get_flatview_root: skip whole-target aliases and single-child containers."""
    while mr.enabled:
        if mr.alias is not None:
            if not mr.alias_offset and mr.alias_mask is None and mr.size >= mr.alias.size:
                mr = mr.alias
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
