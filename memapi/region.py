"""MemoryRegion: one node of a memory tree, with QEMU's constructors and mutators.

Every mutator validates first (raising a MemApiError that names the region,
the address and the rule, with nothing changed), then applies the change inside
a transaction, so outside an explicit transaction it commits at once.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .errors import (
    AliasCycleError,
    AliasSubregionError,
    ArgumentError,
    InvalidRangeError,
    NoSuchEventfdError,
    NotAnAliasError,
    NotASubregionError,
    RegionInUseError,
    RegionKindError,
)
from .ops import UNASSIGNED_MEM_OPS, MemoryRegionOps
from .ram import DirtyClient, RamBlock, memfd
from .system import MemorySystem, core_of, floating_among

if TYPE_CHECKING:
    from .access import IOMMUTLBEntry
    from .ops import MemTxAttrs

    #: ``translate(mr, addr, is_write, attrs)``: where an IOMMU sends an access.
    Translate = Callable[["MemoryRegion", int, bool, MemTxAttrs], IOMMUTLBEntry]

UINT64_MAX = (1 << 64) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Most linear pieces a masked alias may render into (each is a FlatRange, and a KVM slot for RAM).
MAX_MASK_REPEATS = 4096


def _size(name: str | None, size: Any) -> int:
    """QEMU's size rule: UINT64_MAX means exactly 2**64; anything outside [0, 2**64] is refused."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= 1 << 64:
        raise InvalidRangeError(f"region {name!r}: size {size!r} does not fit in [0, 2**64]")
    return 1 << 64 if size == UINT64_MAX else size


def _u64(name: str | None, what: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT64_MAX:
        raise InvalidRangeError(f"region {name!r}: {what} {value!r} is not a 64-bit unsigned value")
    return value


def _flag(name: str | None, what: str, value: Any) -> bool:
    """A bool argument: True, False, 1 or 0 (anything else is refused, not coerced)."""
    if not isinstance(value, int) or value not in (0, 1):
        raise ArgumentError(f"region {name!r}: {what} {value!r} is not a bool")
    return bool(value)


def _contents(name: str | None, size: Any, data: Any) -> memoryview:
    """A ROM's initial contents: bytes-like and no longer than the region."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise ArgumentError(f"region {name!r}: initial data {type(data).__name__} is not bytes-like") from None
    if view.nbytes > _size(name, size):
        raise InvalidRangeError(f"region {name!r}: {view.nbytes:#x} bytes of initial data exceed its size {size:#x}")
    return view


def _callable(name: str | None, what: str, value: Any, optional: bool = False) -> Any:
    if not callable(value) and not (optional and value is None):
        raise ArgumentError(f"region {name!r}: {what} {value!r} is not callable")
    return value


class Ioeventfd:
    """One ioeventfd of a region: [start, start+size) written with data (if match_data)."""

    __slots__ = ("start", "size", "match_data", "data", "notifier")

    def __init__(self, start: int, size: int, match_data: bool, data: int, notifier: Any) -> None:
        self.start, self.size, self.match_data, self.data, self.notifier = start, size, match_data, data, notifier

    def sort_key(self) -> tuple[int, int, bool, int, int]:
        """QEMU's memory_region_ioeventfd_before ordering."""
        return (self.start, self.size, self.match_data, self.data if self.match_data else 0, id(self.notifier))

    def matches(self, other: Ioeventfd) -> bool:
        """QEMU's memory_region_ioeventfd_equal: a size of 0 on either side is a wildcard."""
        return self.start == other.start and (
            not self.size or not other.size or (
                self.size == other.size and self.match_data == other.match_data
                and (not self.match_data or self.data == other.data) and self.notifier is other.notifier))

    def shifted(self, delta: int) -> Ioeventfd:
        return Ioeventfd(self.start + delta, self.size, self.match_data, self.data, self.notifier)

    def __repr__(self) -> str:
        data = f" data={self.data:#x}" if self.match_data else ""
        return f"<Ioeventfd {self.start:#x}+{self.size}{data}>"


class MemoryRegion:
    """A region of a memory tree. Build one with a constructor classmethod (ram, io, alias, ...)."""

    def __init__(self, name: str | None, size: int, *, owner: Any = None) -> None:
        if name is not None and not isinstance(name, str):
            raise ArgumentError(f"region name {name!r} is not a string")
        self.name = name
        self.owner = owner
        self.size = _size(name, size)
        self.addr = 0
        self.priority = 0
        self.enabled = True
        self.readonly = False
        self.nonvolatile = False
        self.unmergeable = False
        self.romd_mode = True
        self.terminates = False
        self.is_ram = False
        self.is_rom_device = False
        self.is_ram_device = False
        self.is_iommu = False
        self.migratable = False
        self.disable_reentrancy_guard = False
        self.ops: MemoryRegionOps = UNASSIGNED_MEM_OPS
        self.ram_block: RamBlock | None = None
        self.alias_target: MemoryRegion | None = None
        self.alias_offset = 0
        self.alias_mask: int | None = None
        self.iommu_translate: Translate | None = None
        self.parent: MemoryRegion | None = None  # the container it is mapped in
        self.system: MemorySystem | None = None  # None while floating (see memapi.system)
        self.subregions: list[MemoryRegion] = []
        self.mapped_via_alias = 0
        self.dirty_log_mask = 0
        self.vga_logging_count = 0
        self.ioeventfds: list[Ioeventfd] = []
        self.coalesced: list[tuple[int, int]] = []
        self.flush_coalesced_mmio = False

    # ------------------------------------------------------------ constructors
    @classmethod
    def container(cls, name: str, size: int, *, owner: Any = None) -> MemoryRegion:
        """A pure container: renders only its subregions (memory_region_init)."""
        return cls(name, size, owner=owner)

    @classmethod
    def io(cls, name: str, size: int, ops: MemoryRegionOps | None = None, *, owner: Any = None) -> MemoryRegion:
        """MMIO or port I/O served by ``ops``; None gives an unassigned (reservation-like) region."""
        mr = cls(name, size, owner=owner)
        if ops is not None and not isinstance(ops, MemoryRegionOps):
            raise ArgumentError(f"region {name!r}: ops {ops!r} is not a MemoryRegionOps")
        mr.terminates = True
        mr.ops = ops if ops is not None else UNASSIGNED_MEM_OPS
        return mr

    @classmethod
    def reservation(cls, name: str, size: int, *, owner: Any = None) -> MemoryRegion:
        """Claims a range: hides what is below it, every access is a decode error."""
        return cls.io(name, size, None, owner=owner)

    @classmethod
    def ram(cls, name: str, size: int, *, owner: Any = None, migratable: bool = True) -> MemoryRegion:
        """Anonymous RAM (MAP_NORESERVE: untouched pages cost nothing)."""
        mr = cls(name, size, owner=owner)
        return mr._init_ram(RamBlock(name, mr.size), migratable)

    @classmethod
    def resizeable_ram(cls, name: str, size: int, max_size: int,
                       resized: Callable[[MemoryRegion, int], None] | None = None, *,
                       owner: Any = None, migratable: bool = True) -> MemoryRegion:
        """RAM whose size ram_resize() changes up to ``max_size``; the host mapping never moves.

        ``resized(mr, new_size)`` runs after each resize (memory_region_init_resizeable_ram).
        """
        mr = cls(name, size, owner=owner)
        max_size = _size(name, max_size)
        _callable(name, "resized callback", resized, optional=True)
        if max_size < mr.size:
            raise InvalidRangeError(f"region {name!r}: size {mr.size:#x} exceeds max_size {max_size:#x}")
        return mr._init_ram(RamBlock(name, mr.size, max_size=max_size, resized=resized), migratable)

    @classmethod
    def ram_from_fd(cls, name: str, size: int, fd: int, *, offset: int = 0, shared: bool = True,
                    readonly: bool = False, owner: Any = None, migratable: bool = True) -> MemoryRegion:
        """RAM backed by a file descriptor (a file, shm or memfd); readonly maps it copy-on-write."""
        mr = cls(name, size, owner=owner)
        if not isinstance(fd, int) or fd < 0:
            raise ArgumentError(f"region {name!r}: fd {fd!r} is not a file descriptor")
        _u64(name, "fd offset", offset)
        mr._init_ram(RamBlock(name, mr.size, fd=fd, offset=offset, shared=shared and not readonly), migratable)
        mr.readonly = _flag(name, "readonly", readonly)
        return mr

    @classmethod
    def ram_from_file(cls, name: str, size: int, path: str, *, shared: bool = True, readonly: bool = False,
                      owner: Any = None) -> MemoryRegion:
        """RAM backed by a file (created and sized if missing, unless readonly)."""
        import os

        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            if not readonly and os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            return cls.ram_from_fd(name, size, fd, shared=shared, readonly=readonly, owner=owner)
        finally:
            os.close(fd)

    @classmethod
    def ram_memfd(cls, name: str, size: int, *, owner: Any = None) -> MemoryRegion:
        """RAM in a memfd, shared: another process or mapping can see it."""
        import os

        fd = memfd(name, size)
        try:
            return cls.ram_from_fd(name, size, fd, owner=owner)
        finally:
            os.close(fd)

    @classmethod
    def ram_ptr(cls, name: str, size: int, buffer: Any, *, owner: Any = None) -> MemoryRegion:
        """RAM over a caller's writable buffer (memory_region_init_ram_ptr)."""
        mr = cls(name, size, owner=owner)
        if buffer is None:
            raise ArgumentError(f"region {name!r}: RAM over a buffer needs a buffer, not None")
        return mr._init_ram(RamBlock(name, mr.size, buffer=buffer), migratable=False)

    @classmethod
    def rom(cls, name: str, size: int, data: bytes = b"", *, owner: Any = None) -> MemoryRegion:
        """Read-only RAM: guests read it directly, writes are dropped."""
        contents = _contents(name, size, data)
        mr = cls(name, size, owner=owner)
        block = RamBlock(name, mr.size)
        block.write(0, contents)
        mr._init_ram(block, migratable=True)
        mr.readonly = True
        return mr

    @classmethod
    def rom_device(cls, name: str, size: int, ops: MemoryRegionOps, data: bytes = b"", *,
                   owner: Any = None) -> MemoryRegion:
        """Reads come from RAM while in romd mode; writes (and reads otherwise) go to ``ops``."""
        if not isinstance(ops, MemoryRegionOps):
            raise RegionKindError(f"region {name!r}: a ROM device needs ops, not {ops!r} (QEMU asserts)")
        contents = _contents(name, size, data)
        mr = cls(name, size, owner=owner)
        mr.terminates = True
        mr.is_rom_device = True
        mr.migratable = True
        mr.ops = ops
        mr.ram_block = RamBlock(name, mr.size)
        mr.ram_block.write(0, contents)
        return mr

    @classmethod
    def ram_device(cls, name: str, size: int, buffer: Any, *, owner: Any = None) -> MemoryRegion:
        """A device's memory (BAR) mapped from a buffer; accessed through host-endian ops."""
        from .ops import AccessRules, Endianness

        mr = cls.ram_ptr(name, size, buffer, owner=owner)
        mr.is_ram_device = True
        assert mr.ram_block is not None  # ram_ptr made it
        view = mr.ram_block.view

        def read(region: MemoryRegion, offset: int, width: int) -> int:
            return int.from_bytes(view[offset:offset + width], "little")

        def write(region: MemoryRegion, offset: int, value: int, width: int) -> None:
            view[offset:offset + width] = value.to_bytes(width, "little")

        rules = AccessRules(1, 8, unaligned=True)
        mr.ops = MemoryRegionOps(read=read, write=write, endianness=Endianness.LITTLE, valid=rules, impl=rules)
        return mr

    @classmethod
    def alias(cls, name: str, target: MemoryRegion, offset: int, size: int, *, mask: int | None = None,
              owner: Any = None) -> MemoryRegion:
        """A window of ``size`` bytes into ``target`` starting at ``offset`` (aliases of aliases too).

        With ``mask``, window offset ``x`` reaches ``target`` at ``offset + (x & mask)``: address
        bits clear in the mask are not decoded, so the target repeats across the window.
        """
        mr = cls(name, size, owner=owner)
        if not isinstance(target, MemoryRegion):
            raise RegionKindError(f"alias {name!r}: target {target!r} is not a MemoryRegion")
        mr.alias_offset = _u64(name, "alias offset", offset)
        if mask is not None:
            mr.alias_mask = _mask_repeats(name, mr.size, _u64(name, "alias mask", mask))
        mr.alias_target = target
        return mr

    @classmethod
    def mirror(cls, name: str, target: MemoryRegion, size: int, *, owner: Any = None) -> MemoryRegion:
        """``target`` repeated every ``target.size`` bytes across a ``size``-byte window (high bits ignored)."""
        period = target.size if isinstance(target, MemoryRegion) else 0
        if period <= 0 or period & (period - 1):
            raise InvalidRangeError(
                f"mirror {name!r}: target size {period:#x} is not a power of two, so no address mask repeats it")
        return cls.alias(name, target, 0, size, mask=period - 1, owner=owner)

    @classmethod
    def iommu(cls, name: str, size: int, translate: Translate, *, owner: Any = None) -> MemoryRegion:
        """An IOMMU: ``translate(mr, addr, is_write, attrs) -> IOMMUTLBEntry`` redirects accesses."""
        mr = cls(name, size, owner=owner)
        mr.terminates = True
        mr.is_iommu = True
        mr.iommu_translate = _callable(name, "translate", translate)
        return mr

    def _init_ram(self, block: RamBlock, migratable: bool) -> MemoryRegion:
        self.terminates = True
        self.is_ram = True
        self.migratable = migratable
        self.ram_block = block
        return self

    # -------------------------------------------------------------- predicates
    @property
    def is_rom(self) -> bool:
        return self.is_ram and self.readonly

    @property
    def is_romd(self) -> bool:
        return self.is_rom_device and self.romd_mode

    @property
    def size_u64(self) -> int:
        """QEMU's memory_region_size(): 2**64 reads as UINT64_MAX."""
        return min(self.size, UINT64_MAX)

    @property
    def is_mapped(self) -> bool:
        return self.parent is not None or self.mapped_via_alias > 0

    @property
    def kind(self) -> str:
        """QEMU's memory_region_type, as mtree prints it (aliases show their final target)."""
        mr = self.final_target()
        if mr.is_ram_device:
            return "ramd"
        if mr.is_romd:
            return "romd"
        if mr.is_rom:
            return "rom"
        return "ram" if mr.is_ram else "i/o"

    @property
    def effective_dirty_log_mask(self) -> int:
        """The stored VGA bit plus MIGRATION while global tracking is on (memory_region_get_dirty_log_mask)."""
        mask = self.dirty_log_mask
        if core_of(self).global_dirty_tracking and (
                (self.ram_block is not None and self.migratable) or self.is_iommu):
            mask |= 1 << DirtyClient.MIGRATION
        return mask

    def final_target(self) -> MemoryRegion:
        """The region at the end of this region's alias chain (itself if not an alias)."""
        mr = self
        while mr.alias_target is not None:
            mr = mr.alias_target
        return mr

    def walk(self) -> Iterator[MemoryRegion]:
        """This region and its descendants, depth first in sibling order (aliases not followed)."""
        yield self
        for sub in self.subregions:
            yield from sub.walk()

    def reachable(self, follow: Callable[[MemoryRegion], bool] | None = None) -> Iterator[MemoryRegion]:
        """This region and every region it reaches through subregions and alias targets, each once.

        Depth first: a region, then its alias target's reach, then its subregions' in sibling order.
        The order depends on the tree alone, so two machines built alike list their regions alike
        (a migration stream names RAM in this order). A region for which ``follow`` is false is
        yielded, but what it reaches is not followed from it.
        """
        stack, seen = [self], set()
        while stack:
            mr = stack.pop()
            if id(mr) in seen:
                continue
            seen.add(id(mr))
            yield mr
            if follow is None or follow(mr):
                stack.extend(reversed(mr.subregions))
                if mr.alias_target is not None:
                    stack.append(mr.alias_target)

    def __repr__(self) -> str:
        where = f" @{self.addr:#x}" if self.parent is not None else ""
        alias = f" -> {self.alias_target.name}+{self.alias_offset:#x}" if self.alias_target is not None else ""
        if self.alias_mask is not None:
            alias += f" mask={self.alias_mask:#x}"
        size = f"{self.size:#x}"
        if self.ram_block is not None and self.ram_block.resizeable:
            size += f"/max {self.ram_block.max_length:#x}"
        state = "" if self.enabled else " disabled"
        return f"<MemoryRegion {self.name!r} {self.kind} size={size}{where}{alias} prio={self.priority}{state}>"

    # ------------------------------------------------------------------- tree
    def add_subregion(self, offset: int, sub: MemoryRegion) -> None:
        """Map ``sub`` at ``offset`` with priority 0 (memory_region_add_subregion)."""
        self._add_subregion(offset, sub, 0)

    def add_subregion_overlap(self, offset: int, sub: MemoryRegion, priority: int) -> None:
        """Map ``sub`` at ``offset`` with a signed 32-bit priority."""
        self._add_subregion(offset, sub, priority)

    def _add_subregion(self, offset: int, sub: MemoryRegion, priority: int) -> None:
        system, joining = self._check_can_hold(offset, sub, priority)
        with system.transaction():
            for region in joining:
                region.system = system
            sub.priority = priority
            self._link(offset, sub, system)

    def _check_can_hold(self, offset: int, sub: MemoryRegion,
                        priority: int) -> tuple[MemorySystem, list[MemoryRegion]]:
        """Refuse a bad link before anything changes; return the system it commits in and the
        floating regions that join that system with it."""
        if not isinstance(sub, MemoryRegion):
            raise RegionKindError(f"region {self.name!r}: subregion {sub!r} is not a MemoryRegion")
        _u64(self.name, f"offset of subregion {sub.name!r}", offset)
        if not isinstance(priority, int) or not INT32_MIN <= priority <= INT32_MAX:
            raise InvalidRangeError(
                f"region {self.name!r}: priority {priority!r} of {sub.name!r} at {offset:#x}"
                " is not a signed 32-bit value")
        if sub.parent is not None:
            raise RegionInUseError(
                f"region {sub.name!r} cannot be added to {self.name!r} at {offset:#x}: "
                f"it is already a subregion of {sub.parent.name!r} at {sub.addr:#x}")
        if self.alias_target is not None:
            raise AliasSubregionError(
                f"region {sub.name!r} cannot be added at {offset:#x} to alias {self.name!r}: "
                "subregions of an alias are never rendered")
        # One walk finds both a cycle (sub reaches self) and the regions that join self's system. A bound
        # region reaches only regions of its system, so self cannot be behind one of another system
        # (or any bound one while self floats): the walk stops there, yet lists it for the error.
        system, reached = self.system, []
        for mr in sub.reachable(follow=lambda mr: mr.system is None or mr.system is system):
            if mr is self:
                raise AliasCycleError(
                    f"adding {sub.name!r} to {self.name!r} at {offset:#x} would make {self.name!r} "
                    "contain itself (through subregions or alias targets)")
            reached.append(mr)
        if system is None:
            return core_of(sub), []
        return system, floating_among(reached, sub, system, f"region {self.name!r}")

    def _link(self, offset: int, sub: MemoryRegion, system: MemorySystem) -> None:
        sub.parent = self
        target = sub.alias_target
        while target is not None:
            target.mapped_via_alias += 1
            target = target.alias_target
        sub.addr = offset
        subs = self.subregions
        for i, other in enumerate(subs):
            if sub.priority >= other.priority:
                subs.insert(i, sub)
                break
        else:
            subs.append(sub)
        system.update_pending |= self.enabled and sub.enabled

    def _unlink(self, sub: MemoryRegion, system: MemorySystem) -> None:
        sub.parent = None
        target = sub.alias_target
        while target is not None:
            target.mapped_via_alias -= 1
            target = target.alias_target
        self.subregions.remove(sub)
        system.update_pending |= self.enabled and sub.enabled

    def del_subregion(self, sub: MemoryRegion) -> None:
        """Unmap ``sub`` from this container."""
        if not isinstance(sub, MemoryRegion) or sub.parent is not self:
            parent = getattr(sub, "parent", None)
            where = "no container" if parent is None else f"container {parent.name!r}"
            raise NotASubregionError(
                f"cannot delete {getattr(sub, 'name', sub)!r} from {self.name!r}: it is not its subregion ({where})")
        system = core_of(sub)
        with system.transaction():
            self._unlink(sub, system)

    def set_address(self, addr: int) -> None:
        """Move within the container: a delete and re-add, so the region becomes newest of its priority."""
        _u64(self.name, "address", addr)
        if addr == self.addr:
            return
        parent = self.parent
        if parent is None:
            self.addr = addr
            return
        system = core_of(self)
        with system.transaction():
            parent._unlink(self, system)
            parent._link(addr, self, system)

    def transaction(self) -> AbstractContextManager[None]:
        """memory_region_transaction_begin/commit, as a ``with`` block on this region's memory system
        (the default one while the region floats): device code batches its changes with it."""
        return core_of(self).transaction()

    def set_enabled(self, enabled: bool) -> None:
        enabled = _flag(self.name, "enabled", enabled)
        if enabled != self.enabled:
            system = core_of(self)
            with system.transaction():
                self.enabled = enabled
                system.update_pending = True

    def set_size(self, size: int) -> None:
        size = _size(self.name, size)
        if self.alias_mask is not None:
            _mask_repeats(self.name, size, self.alias_mask)
        if size != self.size:
            system = core_of(self)
            with system.transaction():
                self.size = size
                system.update_pending = True

    def ram_resize(self, size: int) -> None:
        """Change a resizeable RAM's used size (memory_region_ram_resize); its host memory stays put.

        Listeners see the old ranges go and the new ones come; every used page is then dirty for
        every client (as in QEMU), and the block's ``resized(mr, size)`` callback runs last.
        """
        block = self.ram_block
        if block is None or not block.resizeable:
            raise RegionKindError(f"region {self.name!r}: ram_resize({size!r}) needs a resizeable RAM region")
        size = _size(self.name, size)
        if size > block.max_length:
            raise InvalidRangeError(
                f"region {self.name!r}: ram_resize to {size:#x} exceeds max_size {block.max_length:#x}")
        if size == self.size:
            return
        with core_of(self).lock:
            self.set_size(size)
            block.resize(size)
        if block.resized is not None:
            block.resized(self, size)

    def _set_flag(self, attr: str, value: bool) -> None:
        value = _flag(self.name, attr, value)
        if getattr(self, attr) != value:
            system = core_of(self)
            with system.transaction():
                setattr(self, attr, value)
                system.update_pending |= self.enabled

    def set_readonly(self, readonly: bool) -> None:
        self._set_flag("readonly", readonly)

    def set_nonvolatile(self, nonvolatile: bool) -> None:
        self._set_flag("nonvolatile", nonvolatile)

    def set_unmergeable(self, unmergeable: bool) -> None:
        self._set_flag("unmergeable", unmergeable)

    def rom_device_set_romd(self, romd_mode: bool) -> None:
        """Switch a ROM device between direct reads (romd) and trapping every access."""
        if not self.is_rom_device:
            raise RegionKindError(f"region {self.name!r}: rom_device_set_romd needs a ROM device")
        self._set_flag("romd_mode", romd_mode)

    def set_alias_offset(self, offset: int) -> None:
        if self.alias_target is None:
            raise NotAnAliasError(f"region {self.name!r}: set_alias_offset({offset!r}) needs an alias")
        offset = _u64(self.name, "alias offset", offset)
        if offset != self.alias_offset:
            system = core_of(self)
            with system.transaction():
                self.alias_offset = offset
                system.update_pending |= self.enabled

    # ---------------------------------------------------------------- dirty log
    def set_log(self, log: bool, client: int = DirtyClient.VGA) -> None:
        """Reference-counted VGA logging; only crossings of zero re-render."""
        from . import dirty

        dirty.set_log(self, log, client)

    # ----------------------------------------------------------------- ioeventfd
    def add_eventfd(self, addr: int, size: int, match_data: bool, data: int, notifier: Any) -> None:
        """Signal ``notifier`` instead of calling the ops for matching writes (memory_region_add_eventfd)."""
        entry = self._eventfd(addr, size, match_data, data, notifier)
        keys = [e.sort_key() for e in self.ioeventfds]
        key = entry.sort_key()
        index = next((i for i, k in enumerate(keys) if key < k), len(keys))
        system = core_of(self)
        with system.transaction():
            self.ioeventfds.insert(index, entry)
            system.ioeventfd_pending |= self.enabled

    def del_eventfd(self, addr: int, size: int, match_data: bool, data: int, notifier: Any) -> None:
        """Remove the first matching ioeventfd; a size of 0 matches any at ``addr``."""
        probe = self._eventfd(addr, size, match_data, data, notifier)
        i = next((i for i, entry in enumerate(self.ioeventfds) if probe.matches(entry)), None)
        if i is None:
            raise NoSuchEventfdError(
                f"region {self.name!r}: no ioeventfd at offset {addr:#x} size {size} matches "
                f"(match_data={match_data}, data={data:#x})")
        system = core_of(self)
        with system.transaction():
            del self.ioeventfds[i]
            system.ioeventfd_pending |= self.enabled

    def _eventfd(self, addr: int, size: int, match_data: bool, data: int, notifier: Any) -> Ioeventfd:
        _u64(self.name, "ioeventfd offset", addr)
        if not isinstance(size, int) or size not in (0, 1, 2, 4, 8):
            raise InvalidRangeError(f"region {self.name!r}: ioeventfd at {addr:#x} has size {size!r}, not 0/1/2/4/8")
        _u64(self.name, "ioeventfd data", data)
        match_data = _flag(self.name, "ioeventfd match_data", match_data)
        if size and self.ops.big_endian:
            from .dispatch import bswap

            data = bswap(data & ((1 << (8 * size)) - 1), size)
        return Ioeventfd(addr, size, bool(match_data), data, notifier)

    # ---------------------------------------------------------------- coalescing
    def add_coalescing(self, offset: int, size: int) -> None:
        """Queue writes to [offset, offset+size) instead of exiting (listeners told at once)."""
        from . import coalesced

        coalesced.add(self, offset, size)

    def set_coalescing(self) -> None:
        from . import coalesced

        coalesced.check(self, 0, self.size)
        coalesced.clear(self)
        coalesced.add(self, 0, self.size)

    def clear_coalescing(self) -> None:
        from . import coalesced

        coalesced.clear(self)

    def set_flush_coalesced(self) -> None:
        """Replay queued coalesced writes before every access to this region (memory_region_set_flush_coalesced)."""
        self._set_flush_flag(True)

    def clear_flush_coalesced(self) -> None:
        """Flush the ring; the flag stays while the region still has coalesced ranges."""
        core_of(self).flush_coalesced()
        if not self.coalesced:
            self._set_flush_flag(False)

    def _set_flush_flag(self, on: bool) -> None:
        if self.flush_coalesced_mmio != on:
            self.flush_coalesced_mmio = on
            core_of(self).forget_exit_paths(self)


def _mask_repeats(name: str | None, size: int, mask: int) -> int:
    """Check that a ``size``-byte window under ``mask`` renders into at most MAX_MASK_REPEATS pieces."""
    run = (mask + 1) & ~mask  # each piece is as long as the mask's trailing ones allow
    if -(-size // run) > MAX_MASK_REPEATS:
        raise InvalidRangeError(
            f"alias {name!r}: mask {mask:#x} over {size:#x} bytes renders {-(-size // run)} pieces of {run:#x} "
            f"bytes, more than MAX_MASK_REPEATS ({MAX_MASK_REPEATS})")
    return mask

