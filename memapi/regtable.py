"""Register-table MMIO: declare registers instead of writing a read/write switch.

A RegisterTable holds each register's value and builds ordinary MemoryRegionOps, so
the valid/impl rules, splitting and widening stay dispatch's. One callback access may
cover part of a register or several: each byte goes to the register holding it (byte
lanes in the device's endianness), written bits obey the register's read-only and
write-1-to-clear masks, and bytes outside every register follow the ``Unknown`` policy.
"""
from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from .errors import InvalidRangeError, MemApiError
from .ops import AccessRules, Endianness, MemoryRegionOps, MemTxAttrs

if TYPE_CHECKING:
    from .region import MemoryRegion

#: ``on_read(mr, reg, value) -> int``: what the access sees, given the stored value.
ReadHook = Callable[["MemoryRegion", "Register", int], int]
#: ``on_write(mr, reg, old, new) -> int | None``: runs after the store; a value returned replaces ``new``.
WriteHook = Callable[["MemoryRegion", "Register", int, int], int | None]


class UnknownRegisterError(MemApiError, KeyError):
    """A register name the table does not declare."""


class Unknown(enum.Enum):
    """What bytes outside every register do."""

    IGNORE = "ignore"  # read as zero, writes dropped (RAZ/WI)
    ALL_ONES = "all-ones"  # read as 0xff, writes dropped
    ERROR = "error"  # the access is refused by valid.accepts: 0 and DECODE_ERROR, no callback


@dataclass(frozen=True)
class Register:
    """One register: ``width`` bytes at ``offset``, its reset value, masks and optional hooks."""

    name: str
    offset: int
    width: int = 4
    reset: int = 0
    ro_mask: int = 0
    w1c_mask: int = 0
    on_read: ReadHook | None = None
    on_write: WriteHook | None = None

    def __post_init__(self) -> None:
        def fail(rule: str) -> None:
            raise InvalidRangeError(f"register {self.name!r} at {self.offset!r}: {rule}")

        if not isinstance(self.name, str) or not self.name:
            fail("the name must be a non-empty string")
        if not isinstance(self.offset, int) or not 0 <= self.offset < 1 << 64:
            fail("the offset must be a 64-bit unsigned integer")
        if self.width not in (1, 2, 4, 8):
            fail(f"width {self.width!r} is not 1, 2, 4 or 8 bytes")
        for field in ("reset", "ro_mask", "w1c_mask"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 0 <= value <= self.value_mask:
                fail(f"{field} {value!r} does not fit in {self.width} bytes")
        if self.ro_mask & self.w1c_mask:
            fail(f"ro_mask {self.ro_mask:#x} and w1c_mask {self.w1c_mask:#x} share bits "
                 f"{self.ro_mask & self.w1c_mask:#x}")
        for hook in ("on_read", "on_write"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                fail(f"{hook} is not callable")

    @property
    def end(self) -> int:
        return self.offset + self.width

    @property
    def value_mask(self) -> int:
        return (1 << (8 * self.width)) - 1

    def store(self, old: int, value: int, lanes: int) -> int:
        """The register after writing ``value`` into the bits of ``lanes``: ro bits kept, w1c bits cleared by 1s."""
        ro, w1c = self.ro_mask, self.w1c_mask
        written = (old & ro) | (old & w1c & ~value) | (value & ~(ro | w1c))
        return (old & ~lanes) | (written & lanes)


class RegisterTable:
    """The registers of one device instance and the MemoryRegionOps that serve them.

    ``impl`` defaults to 1..8 bytes, so callbacks see the guest's accesses unsplit;
    pass narrower rules to make dispatch split or widen them first.
    """

    def __init__(self, registers: Iterable[Register], *, unknown: Unknown = Unknown.IGNORE,
                 endianness: Endianness = Endianness.NATIVE, valid: AccessRules = AccessRules(),
                 impl: AccessRules | None = None) -> None:
        regs = sorted(registers, key=lambda r: getattr(r, "offset", 0))
        _check(regs, unknown)
        self.registers: tuple[Register, ...] = tuple(regs)
        self.unknown = unknown
        self._starts = [r.offset for r in regs]
        self._by_offset = {r.offset: i for i, r in enumerate(regs)}
        self._by_name = {r.name: i for i, r in enumerate(regs)}
        self._values = [r.reset for r in regs]
        self._order: Literal["big", "little"] = "big" if endianness == Endianness.BIG else "little"
        self._fill = b"\xff" if unknown is Unknown.ALL_ONES else b"\0"
        if unknown is Unknown.ERROR:
            valid = replace(valid, accepts=self._accepts_with(valid.accepts))
        impl = impl if impl is not None else AccessRules(1, 8, unaligned=valid.unaligned)
        self.ops = MemoryRegionOps(read=self._read, write=self._write, endianness=endianness,
                                   valid=valid, impl=impl)

    # ------------------------------------------------------------ device side
    def reset(self) -> None:
        """Every register back to its reset value (no hooks run)."""
        self._values = [r.reset for r in self.registers]

    def __getitem__(self, name: str) -> int:
        return self._values[self._index(name)]

    def __setitem__(self, name: str, value: int) -> None:
        """Set a register as the device would: no masks, no hooks."""
        i = self._index(name)
        reg = self.registers[i]
        if not isinstance(value, int) or not 0 <= value <= reg.value_mask:
            raise InvalidRangeError(
                f"register {name!r} at {reg.offset:#x}: value {value!r} does not fit in {reg.width} bytes")
        self._values[i] = value

    def values(self) -> dict[str, int]:
        """Every register's value by name, in offset order."""
        return {r.name: v for r, v in zip(self.registers, self._values, strict=True)}

    def dump(self) -> str:
        """One line per register, for debugging: offset, name, width and value (no hooks run)."""
        pad = max((len(r.name) for r in self.registers), default=0)
        return "".join(f"{r.offset:#06x}  {r.name:<{pad}}  {8 * r.width:2}-bit  {v:#0{2 + 2 * r.width}x}\n"
                       for r, v in zip(self.registers, self._values, strict=True))

    def _index(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownRegisterError(f"register table: no register named {name!r}") from None

    # ------------------------------------------------------------ bus side
    def _touching(self, offset: int, size: int) -> Iterator[int]:
        """Indexes of the registers that hold a byte of [offset, offset+size), ascending."""
        i = max(bisect_right(self._starts, offset) - 1, 0)
        regs, end = self.registers, offset + size
        while i < len(regs) and regs[i].offset < end:
            if regs[i].end > offset:
                yield i
            i += 1

    def _accepts_with(self, accepts: Callable[..., bool] | None) -> Callable[..., bool]:
        def covered(mr: MemoryRegion, offset: int, size: int, is_write: bool, attrs: MemTxAttrs) -> bool:
            held = sum(min(offset + size, self.registers[i].end) - max(offset, self.registers[i].offset)
                       for i in self._touching(offset, size))
            return held == size and (accepts is None or accepts(mr, offset, size, is_write, attrs))

        return covered

    def _get(self, mr: MemoryRegion, i: int) -> int:
        reg, value = self.registers[i], self._values[i]
        return value if reg.on_read is None else reg.on_read(mr, reg, value) & reg.value_mask

    def _put(self, mr: MemoryRegion, i: int, value: int, lanes: int) -> None:
        reg, old = self.registers[i], self._values[i]
        new = self._values[i] = reg.store(old, value, lanes)
        if reg.on_write is not None:
            replaced = reg.on_write(mr, reg, old, new)
            if replaced is not None:
                self._values[i] = replaced & reg.value_mask

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        i = self._by_offset.get(offset)
        if i is not None and self.registers[i].width == size:
            return self._get(mr, i)
        out = bytearray(self._fill * size)
        for i in self._touching(offset, size):
            reg = self.registers[i]
            lo, hi = max(offset, reg.offset), min(offset + size, reg.end)
            data = self._get(mr, i).to_bytes(reg.width, self._order)
            out[lo - offset:hi - offset] = data[lo - reg.offset:hi - reg.offset]
        return int.from_bytes(out, self._order)

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        i = self._by_offset.get(offset)
        if i is not None and self.registers[i].width == size:
            self._put(mr, i, value, self.registers[i].value_mask)
            return
        data = value.to_bytes(size, self._order)
        for i in self._touching(offset, size):
            reg = self.registers[i]
            lo, hi = max(offset, reg.offset), min(offset + size, reg.end)
            buf, lanes = bytearray(reg.width), bytearray(reg.width)
            buf[lo - reg.offset:hi - reg.offset] = data[lo - offset:hi - offset]
            lanes[lo - reg.offset:hi - reg.offset] = b"\xff" * (hi - lo)
            self._put(mr, i, int.from_bytes(buf, self._order), int.from_bytes(lanes, self._order))


def _check(regs: list[Register], unknown: object) -> None:
    """Registers must be Register objects with unique names that do not overlap."""
    if not isinstance(unknown, Unknown):
        raise InvalidRangeError(f"register table: unknown-offset policy {unknown!r} is not an Unknown member")
    names: set[str] = set()
    for k, reg in enumerate(regs):
        if not isinstance(reg, Register):
            raise InvalidRangeError(f"register table: {reg!r} is not a Register")
        if reg.name in names:
            raise InvalidRangeError(f"register table: register name {reg.name!r} (at {reg.offset:#x}) is used twice")
        names.add(reg.name)
        if k and regs[k - 1].end > reg.offset:
            prev = regs[k - 1]
            raise InvalidRangeError(
                f"register table: register {reg.name!r} at {reg.offset:#x} overlaps {prev.name!r} "
                f"at {prev.offset:#x} ({prev.width} bytes)")
