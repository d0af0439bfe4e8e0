"""AddressSpace: a root region, its current FlatView, and the listeners watching it."""
from __future__ import annotations

from collections.abc import Iterator

from . import access
from .dispatch import RESULTS
from .errors import ArgumentError, InvalidRangeError, ListenerError, RegionKindError
from .exit_path import exit_load, exit_store
from .flatview import FlatRange, FlatView, render
from .listener import MemoryListener, MemoryRegionSection, listener_order
from .ops import UNSPECIFIED, MemTxAttrs, MemTxResult
from .region import Ioeventfd, MemoryRegion
from .system import MemorySystem, bindable, default_system, flatview_root

_END = 1 << 64
_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8)
_NO_VALUE = object()  # _check: an access without a value (read, write of bytes, lookup)


class AddressSpace:
    """A view of memory from one initiator (a CPU's memory or I/O space, a device's DMA)."""

    def __init__(self, root: MemoryRegion, name: str, system: MemorySystem | None = None) -> None:
        """A space rendering ``root`` in ``system``: the root's own system if it has one, else the
        one given, else the default. The root and every floating region it reaches join it."""
        if not isinstance(root, MemoryRegion):
            raise RegionKindError(f"address space {name!r}: root {root!r} is not a MemoryRegion")
        if not isinstance(name, str):
            raise ArgumentError(f"address space name {name!r} is not a string")
        if system is not None and not isinstance(system, MemorySystem):
            raise ArgumentError(f"address space {name!r}: system {system!r} is not a MemorySystem")
        system = system or root.system or default_system()
        joining = bindable(root, system)
        self.root = root
        self.name = name
        self.system = system
        self.listeners: list[MemoryListener] = []
        self.ioeventfds: list[Ioeventfd] = []
        self.ioeventfd_notifiers = 0
        self.destroyed = False
        with system.lock:
            for region in joining:
                region.system = system
            physmr = flatview_root(root)
            shared = next((s.current_map for s in system.address_spaces() if s.current_map.root is physmr), None)
            self.current_map: FlatView = shared if shared is not None else render(physmr)
            system.add_address_space(self)

    def __repr__(self) -> str:
        return f"<AddressSpace {self.name!r} root={self.root.name!r} ranges={len(self.current_map)}>"

    def destroy(self) -> None:
        """Drop the space (QEMU's address_space_destroy): its listeners must be gone first."""
        if self.listeners:
            names = [listener.name for listener in self.listeners]
            raise ListenerError(f"address space {self.name!r} still has listeners {names}")
        with self.system.lock:
            self.system.remove_address_space(self)
            self.destroyed = True

    @property
    def flatview(self) -> FlatView:
        return self.current_map

    # ----------------------------------------------------------- listeners
    def register_listener(self, listener: MemoryListener) -> None:
        """memory_listener_register: sort in by priority, then replay the current state to it."""
        if not isinstance(listener, MemoryListener):
            raise ListenerError(f"address space {self.name!r}: {listener!r} is not a MemoryListener")
        if listener.address_space is not None:
            raise ListenerError(
                f"listener {listener.name or listener!r} is already registered on {listener.address_space.name!r}")
        if self.destroyed:
            raise ListenerError(f"listener {listener.name or listener!r}: address space {self.name!r} is destroyed")
        if listener.has("log_sync") and listener.has("log_sync_global"):
            raise ListenerError(f"listener {listener.name or listener!r} has both log_sync and log_sync_global")
        with self.system.lock:
            listener.address_space = self
            listener._seq = self.system.next_listener_seq()
            self.listeners.append(listener)
            self.listeners.sort(key=listener_order)
            self.system.refresh_listeners()
            self._replay_add(listener)
            if listener.has_eventfd:
                self.ioeventfd_notifiers += 1

    def unregister_listener(self, listener: MemoryListener) -> None:
        if getattr(listener, "address_space", None) is not self:
            raise ListenerError(f"listener {getattr(listener, 'name', None) or listener!r} is not registered "
                                f"on {self.name!r}")
        with self.system.lock:
            if listener.has_eventfd:
                self.ioeventfd_notifiers -= 1
            self._replay_del(listener)
            self.listeners.remove(listener)
            listener.address_space = None
            self.system.refresh_listeners()

    def _replay_add(self, listener: MemoryListener) -> None:
        view = self.current_map
        listener.begin()
        if self.system.global_dirty_tracking:
            listener.log_global_start()
        for fr in view.ranges:
            section = MemoryRegionSection.of(fr, view)
            listener.region_add(section)
            if listener.has("coalesced_io_add"):
                for addr, size in _coalesced_pieces(fr, stop_at_miss=True):
                    listener.coalesced_io_add(section, addr, size)
            if fr.dirty_log_mask:
                listener.log_start(section, 0, fr.dirty_log_mask)
        for fd in self.ioeventfds:
            listener.eventfd_add(_eventfd_section(fd, view), fd.match_data, fd.data, fd.notifier)
        listener.commit()

    def _replay_del(self, listener: MemoryListener) -> None:
        view = self.current_map
        listener.begin()
        for fr in view.ranges:
            section = MemoryRegionSection.of(fr, view)
            if fr.dirty_log_mask:
                listener.log_stop(section, fr.dirty_log_mask, 0)
            if listener.has("coalesced_io_del"):
                for addr, size in _coalesced_pieces(fr, stop_at_miss=True):
                    listener.coalesced_io_del(section, addr, size)
            listener.region_del(section)
        for fd in self.ioeventfds:
            listener.eventfd_del(_eventfd_section(fd, view), fd.match_data, fd.data, fd.notifier)
        listener.commit()

    # ------------------------------------------------------------ commits
    def _update_topology(self, new: FlatView) -> None:
        """The two-pass diff of address_space_update_topology_pass, then publish ``new``."""
        old = self.current_map
        if self.listeners:
            self._diff_pass(old, new, adding=False)
            self._diff_pass(old, new, adding=True)
        self.current_map = new

    def _diff_pass(self, old_view: FlatView, new_view: FlatView, adding: bool) -> None:
        old, new = old_view.ranges, new_view.ranges
        fwd = self.listeners
        rev = fwd[::-1]
        i = j = 0
        while i < len(old) or j < len(new):
            fo = old[i] if i < len(old) else None
            fn = new[j] if j < len(new) else None
            if fo is not None and (fn is None or fo.start < fn.start or (fo.start == fn.start and not fo.same_as(fn))):
                if not adding:
                    section = MemoryRegionSection.of(fo, old_view)
                    self._notify_coalesced(fo, section, rev, "coalesced_io_del")
                    for listener in rev:
                        listener.region_del(section)
                i += 1
            elif fo is not None and fn is not None and fo.same_as(fn):
                if adding:
                    section = MemoryRegionSection.of(fn, old_view)
                    for listener in fwd:
                        listener.region_nop(section)
                    if fn.dirty_log_mask & ~fo.dirty_log_mask:
                        for listener in fwd:
                            listener.log_start(section, fo.dirty_log_mask, fn.dirty_log_mask)
                    if fo.dirty_log_mask & ~fn.dirty_log_mask:
                        for listener in rev:
                            listener.log_stop(section, fo.dirty_log_mask, fn.dirty_log_mask)
                i += 1
                j += 1
            else:
                assert fn is not None  # old ranges are exhausted or behind: a new one is next
                if adding:
                    section = MemoryRegionSection.of(fn, old_view)
                    for listener in fwd:
                        listener.region_add(section)
                    self._notify_coalesced(fn, section, fwd, "coalesced_io_add")
                j += 1

    @staticmethod
    def _notify_coalesced(fr: FlatRange, section: MemoryRegionSection, listeners: list[MemoryListener],
                          callback: str) -> None:
        for addr, size in _coalesced_pieces(fr):
            for listener in listeners:
                getattr(listener, callback)(section, addr, size)

    def _update_ioeventfds(self) -> None:
        """Recompute the AS-level ioeventfd list and send the difference (del forward, add reverse)."""
        if not self.ioeventfd_notifiers:
            return
        view = self.current_map
        new: list[Ioeventfd] = []
        for fr in view.ranges:
            delta = fr.start - fr.offset_in_region
            for fd in fr.mr.ioeventfds:
                start = fd.start + delta
                if fr.start <= start < fr.end or (fd.size and start < fr.start < start + fd.size):
                    new.append(fd.shifted(delta))
        old = self.ioeventfds
        fwd = self.listeners
        rev = fwd[::-1]
        i = j = 0
        while i < len(old) or j < len(new):
            if i < len(old) and (j == len(new) or old[i].sort_key() < new[j].sort_key()):
                fd = old[i]
                for listener in fwd:
                    listener.eventfd_del(_eventfd_section(fd, view), fd.match_data, fd.data, fd.notifier)
                i += 1
            elif j < len(new) and (i == len(old) or new[j].sort_key() < old[i].sort_key()):
                fd = new[j]
                for listener in rev:
                    listener.eventfd_add(_eventfd_section(fd, view), fd.match_data, fd.data, fd.notifier)
                j += 1
            else:
                i += 1
                j += 1
        self.ioeventfds = new

    # ------------------------------------------------------------- access
    def read(self, addr: int, size: int, attrs: MemTxAttrs = UNSPECIFIED) -> tuple[bytes, MemTxResult]:
        """address_space_read: ``size`` bytes at ``addr`` and the OR of the pieces' results."""
        self._check(addr, size, attrs)
        return access.read(self.current_map, addr, size, attrs)

    def write(self, addr: int, data: bytes | bytearray | memoryview, attrs: MemTxAttrs = UNSPECIFIED) -> MemTxResult:
        """address_space_write: RAM directly (marking pages dirty), MMIO through the ops."""
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            raise ArgumentError(
                f"address space {self.name!r}: write data {type(data).__name__} is not bytes-like") from None
        self._check(addr, view.nbytes, attrs)
        return access.write(self.current_map, addr, view, attrs)

    def read_int(self, addr: int, size: int, attrs: MemTxAttrs = UNSPECIFIED) -> int:
        """A little-endian load of 1..8 bytes (the result bits are dropped, as KVM does)."""
        self._check(addr, size, attrs, 0)
        return access.read_value(self.current_map, addr, size, attrs)

    def write_int(self, addr: int, value: int, size: int, attrs: MemTxAttrs = UNSPECIFIED) -> MemTxResult:
        """A little-endian store of the low ``size`` (1..8) bytes of ``value``."""
        self._check(addr, size, attrs, value)
        return access.write_value(self.current_map, addr, value, size, attrs)

    def store(self, addr: int, value: int, size: int) -> MemTxResult:
        """A guest store, as a KVM exit makes it: write_int() without attrs, except that a store to RAM
        behind a readonly range is dropped (DECODE_ERROR). Run loops call exit_path.exit_store directly."""
        self._check(addr, size, UNSPECIFIED, value)
        return RESULTS[exit_store(self.current_map, addr, value & ((1 << 8 * size) - 1), size)]

    def load(self, addr: int, size: int) -> int:
        """A guest load, as a KVM exit makes it: read_int() without attrs."""
        self._check(addr, size, UNSPECIFIED, 0)
        return exit_load(self.current_map, addr, size)

    def _check(self, addr: int, size: int, attrs: MemTxAttrs, value: object = _NO_VALUE) -> None:
        """Refuse an access that is not [addr, addr+size) inside [0, 2**64), or (with a value) not 1..8 bytes."""
        if not isinstance(attrs, MemTxAttrs):
            raise ArgumentError(f"address space {self.name!r}: attrs {attrs!r} is not a MemTxAttrs")
        if value is not _NO_VALUE and (not isinstance(value, int) or size not in _WIDTHS):
            raise InvalidRangeError(
                f"address space {self.name!r}: access of value {value!r} at {addr!r} must be an int of 1..8 bytes, "
                f"not {size!r}")
        if not (isinstance(addr, int) and isinstance(size, int) and 0 <= addr and 0 <= size and addr + size <= _END):
            raise InvalidRangeError(f"address space {self.name!r}: access of {size!r} bytes at {addr!r} "
                                    "does not fit in [0, 2**64)")

    def lookup(self, addr: int) -> FlatRange | None:
        """The FlatRange at ``addr`` in the current view (None for a hole)."""
        self._check(addr, 0, UNSPECIFIED)
        return self.current_map.lookup(addr)


def _eventfd_section(fd: Ioeventfd, view: FlatView) -> MemoryRegionSection:
    return MemoryRegionSection(None, view, 0, fd.size, fd.start)


def _coalesced_pieces(fr: FlatRange, stop_at_miss: bool = False) -> Iterator[tuple[int, int]]:
    """(addr, size) of each coalesced range of fr.mr intersected with fr, in AS addresses."""
    delta = fr.start - fr.offset_in_region
    for offset, size in fr.mr.coalesced:
        lo, hi = max(offset + delta, fr.start), min(offset + size + delta, fr.end)
        if lo >= hi:
            if stop_at_miss:
                return
            continue
        yield lo, hi - lo
