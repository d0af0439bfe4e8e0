"""MMIO callbacks and their access rules (QEMU's MemoryRegionOps), plus MemTx types.

Callbacks receive the MemoryRegion first:
``read(mr, offset, size) -> int`` and ``write(mr, offset, value, size)``;
the attribute-taking forms return a MemTxResult:
``read_with_attrs(mr, offset, size, attrs) -> (int, MemTxResult)`` and
``write_with_attrs(mr, offset, value, size, attrs) -> MemTxResult``.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .region import MemoryRegion


class MemTxResult(enum.IntFlag):
    """Result bits of an access (OR-ed over the pieces of a split access)."""

    OK = 0
    ERROR = 1
    DECODE_ERROR = 2
    ACCESS_ERROR = 4


class Endianness(enum.IntEnum):
    """Device endianness; NATIVE is the target's (x86: little)."""

    NATIVE = 0
    BIG = 1
    LITTLE = 2


@dataclass(frozen=True)
class MemTxAttrs:
    """Transaction attributes (the fields of QEMU's MemTxAttrs that matter here)."""

    unspecified: bool = False
    secure: bool = False
    user: bool = False
    memory: bool = False
    debug: bool = False
    requester_id: int = 0


UNSPECIFIED = MemTxAttrs(unspecified=True)

#: The callbacks' signatures (see the module docstring).
Accepts = Callable[["MemoryRegion", int, int, bool, MemTxAttrs], bool]
ReadFn = Callable[["MemoryRegion", int, int], int]
WriteFn = Callable[["MemoryRegion", int, int, int], None]
ReadWithAttrsFn = Callable[["MemoryRegion", int, int, MemTxAttrs], tuple[int, MemTxResult]]
WriteWithAttrsFn = Callable[["MemoryRegion", int, int, int, MemTxAttrs], MemTxResult]


@dataclass(frozen=True)
class AccessRules:
    """``valid`` (what the guest may do) or ``impl`` (what the callbacks implement).

    A max of 0 means "any size" for valid and 4 for impl; a min of 0 means 1.
    ``accepts(mr, offset, size, is_write, attrs)`` only matters for valid.
    """

    min_access_size: int = 0
    max_access_size: int = 0
    unaligned: bool = False
    accepts: Accepts | None = None

    def __post_init__(self) -> None:
        from .errors import ArgumentError, InvalidRangeError

        lo, hi = self.min_access_size, self.max_access_size
        if any(not isinstance(v, int) or v not in (0, 1, 2, 4, 8) for v in (lo, hi)) or (lo and hi and lo > hi):
            raise InvalidRangeError(f"AccessRules: access sizes {lo!r}..{hi!r} must be 0, 1, 2, 4 or 8 with min <= max")
        if not isinstance(self.unaligned, int) or self.unaligned not in (0, 1):
            raise ArgumentError(f"AccessRules: unaligned={self.unaligned!r} is not a bool")
        if self.accepts is not None and not callable(self.accepts):
            raise ArgumentError(f"AccessRules: accepts={self.accepts!r} is not callable")


@dataclass(frozen=True)
class MemoryRegionOps:
    """The callbacks of an I/O or ROM-device region and their access rules."""

    read: ReadFn | None = None
    write: WriteFn | None = None
    read_with_attrs: ReadWithAttrsFn | None = None
    write_with_attrs: WriteWithAttrsFn | None = None
    endianness: Endianness = Endianness.NATIVE
    valid: AccessRules = AccessRules()
    impl: AccessRules = AccessRules()
    #: Aligned sizes that reach one callback unchanged: no splitting, widening, swap or accepts.
    direct_sizes: frozenset[int] = dataclass_field(init=False, repr=False, compare=False)
    #: The device is big-endian (values are byte-swapped on their way in and out).
    big_endian: bool = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .errors import ArgumentError, InvalidRangeError

        for field in ("read", "write", "read_with_attrs", "write_with_attrs"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise ArgumentError(f"MemoryRegionOps: {field}={value!r} is not callable")
        if not isinstance(self.valid, AccessRules) or not isinstance(self.impl, AccessRules):
            raise ArgumentError(
                f"MemoryRegionOps: valid and impl must be AccessRules, not {self.valid!r}, {self.impl!r}")
        if self.endianness not in tuple(Endianness):
            raise InvalidRangeError(f"MemoryRegionOps: endianness {self.endianness!r} is not NATIVE, BIG or LITTLE")
        if self.impl.unaligned and not self.valid.unaligned:
            raise InvalidRangeError(
                "MemoryRegionOps: impl.unaligned requires valid.unaligned (QEMU asserts this in init_io)"
            )
        # Computed once: every access reads them.
        object.__setattr__(self, "big_endian", self.endianness == Endianness.BIG)
        object.__setattr__(self, "direct_sizes", frozenset(s for s in (1, 2, 4, 8) if self._is_direct(s)))

    def _is_direct(self, size: int) -> bool:
        valid, impl = self.valid, self.impl
        if (self.big_endian or valid.accepts is not None or (self.read is None and self.read_with_attrs is None)
                or (self.write is None and self.write_with_attrs is None)):
            return False
        if valid.max_access_size and not valid.min_access_size <= size <= valid.max_access_size:
            return False
        if size > (valid.max_access_size or 4):
            return False
        return (impl.min_access_size or 1) <= size <= (impl.max_access_size or 4)


def _reject(mr: MemoryRegion, offset: int, size: int, is_write: bool, attrs: MemTxAttrs) -> bool:
    return False


def _all_ones(mr: MemoryRegion, offset: int, size: int) -> int:
    return (1 << 64) - 1


def _ignore(mr: MemoryRegion, offset: int, value: int, size: int) -> None:
    return None


#: QEMU's unassigned_mem_ops: accepts nothing (reads 0 with DECODE_ERROR, drops writes).
UNASSIGNED_MEM_OPS = MemoryRegionOps(valid=AccessRules(accepts=_reject))

#: QEMU's unassigned_io_ops (x86 port I/O): reads all ones, ignores writes.
UNASSIGNED_IO_OPS = MemoryRegionOps(read=_all_ones, write=_ignore, endianness=Endianness.LITTLE)
