"""MemoryListener and the MemoryRegionSection it receives.

Subclass MemoryListener and override the callbacks you need; like QEMU's
NULL function pointers, a callback that is not overridden is never called
(which matters for eventfd replay and log_sync versus log_sync_global).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .address_space import AddressSpace
    from .flatview import FlatRange, FlatView
    from .region import MemoryRegion


class MemoryRegionSection:
    """A piece of a region as mapped in an address space."""

    __slots__ = ("mr", "fv", "offset_within_region", "size", "offset_within_address_space",
                 "readonly", "nonvolatile", "unmergeable")

    def __init__(self, mr: MemoryRegion | None, fv: FlatView | None, offset_within_region: int,
                 size: int, offset_within_address_space: int, readonly: bool = False,
                 nonvolatile: bool = False, unmergeable: bool = False) -> None:
        self.mr = mr
        self.fv = fv
        self.offset_within_region = offset_within_region
        self.size = size
        self.offset_within_address_space = offset_within_address_space
        self.readonly = readonly
        self.nonvolatile = nonvolatile
        self.unmergeable = unmergeable

    @classmethod
    def of(cls, fr: FlatRange, fv: FlatView | None) -> MemoryRegionSection:
        """QEMU's section_from_flat_range."""
        return cls(fr.mr, fv, fr.offset_in_region, fr.end - fr.start, fr.start,
                   fr.readonly, fr.nonvolatile, fr.unmergeable)

    @property
    def end(self) -> int:
        return self.offset_within_address_space + self.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryRegionSection):
            return NotImplemented
        return (self.mr is other.mr and self.offset_within_region == other.offset_within_region
                and self.size == other.size
                and self.offset_within_address_space == other.offset_within_address_space
                and self.readonly == other.readonly and self.nonvolatile == other.nonvolatile
                and self.unmergeable == other.unmergeable)

    def __repr__(self) -> str:
        name = self.mr.name if self.mr is not None else None
        ro = " ro" if self.readonly else ""
        return (f"<Section {self.offset_within_address_space:#x}+{self.size:#x} {name}"
                f" @{self.offset_within_region:#x}{ro}>")


class MemoryListener:
    """Base class: override what you need. ``priority`` orders listeners (lower first)."""

    priority: int = 0
    name: str = ""

    def __init__(self, priority: int | None = None, name: str | None = None) -> None:
        if priority is not None:
            self.priority = priority
        if name is not None:
            self.name = name
        self.address_space: AddressSpace | None = None
        self._seq = 0  # set at registration by the space's system: equal priorities keep registration order

    def has(self, callback: str) -> bool:
        """True if this listener overrides ``callback`` (QEMU's non-NULL function pointer)."""
        return getattr(type(self), callback) is not getattr(MemoryListener, callback)

    # Topology
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def region_add(self, section: MemoryRegionSection) -> None: ...
    def region_del(self, section: MemoryRegionSection) -> None: ...
    def region_nop(self, section: MemoryRegionSection) -> None: ...

    # Dirty logging
    def log_start(self, section: MemoryRegionSection, old: int, new: int) -> None: ...
    def log_stop(self, section: MemoryRegionSection, old: int, new: int) -> None: ...
    def log_sync(self, section: MemoryRegionSection) -> None: ...
    def log_sync_global(self, last_stage: bool) -> None: ...
    def log_clear(self, section: MemoryRegionSection) -> None: ...
    def log_global_start(self) -> bool:
        return True
    def log_global_stop(self) -> None: ...
    def log_global_after_sync(self) -> None: ...

    # ioeventfd and coalesced I/O
    def eventfd_add(self, section: MemoryRegionSection, match_data: bool, data: int, notifier: Any) -> None: ...
    def eventfd_del(self, section: MemoryRegionSection, match_data: bool, data: int, notifier: Any) -> None: ...
    def coalesced_io_add(self, section: MemoryRegionSection, addr: int, size: int) -> None: ...
    def coalesced_io_del(self, section: MemoryRegionSection, addr: int, size: int) -> None: ...

    @property
    def has_eventfd(self) -> bool:
        return self.has("eventfd_add") or self.has("eventfd_del")


def listener_order(listener: MemoryListener) -> tuple[int, int]:
    """The sort key of QEMU's listener lists: by priority, equal priorities in registration order."""
    return listener.priority, listener._seq
