"""Address-space accesses (QEMU's flatview_read/write_continue), piece by piece.

RAM and ROMD reads and RAM writes are direct copies, clamped to the end of the
range; everything else is split by memory_access_size and dispatched to the
terminal region's ops. ROM writes go to the ROM's default ops and are dropped.
Each access is resolved against the one FlatView it is given (the address
space's current view, read once), so a concurrent commit never splits it
between an old and a new map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dirty import host_write
from .dispatch import RESULTS, read_bits, write_bits
from .ops import MemTxAttrs, MemTxResult
from .region import MemoryRegion
from .system import core_of

if TYPE_CHECKING:
    from .address_space import AddressSpace
    from .flatview import FlatView

#: QEMU's io_mem_unassigned: what a hole in an address space resolves to (never linked anywhere).
UNASSIGNED = MemoryRegion.io("unassigned", 1 << 64)

_OK = 0
_DECODE = int(MemTxResult.DECODE_ERROR)
_ACCESS = int(MemTxResult.ACCESS_ERROR)


@dataclass(frozen=True)
class IOMMUTLBEntry:
    """What an IOMMU's translate returns: where ``addr`` goes and with which permissions."""

    target_as: AddressSpace | None
    translated_addr: int
    addr_mask: int
    read: bool = True
    write: bool = True


def translate(view: FlatView, addr: int, length: int, is_write: bool,
              attrs: MemTxAttrs) -> tuple[MemoryRegion, int, int]:
    """Resolve ``addr`` in ``view`` to (terminal region, offset in it, usable length), following IOMMUs."""
    while True:
        fr = view.lookup(addr)
        if fr is None:
            return UNASSIGNED, addr, length
        mr = fr.mr
        xlat = addr - fr.start + fr.offset_in_region
        if mr.is_ram:
            length = min(length, fr.end - addr)
        iommu_translate = mr.iommu_translate
        if iommu_translate is None:  # not an IOMMU
            return mr, xlat, length
        entry: IOMMUTLBEntry = iommu_translate(mr, xlat, is_write, attrs)
        if entry.target_as is None or not (entry.write if is_write else entry.read):
            return UNASSIGNED, addr, length
        mask = entry.addr_mask
        addr = (entry.translated_addr & ~mask) | (xlat & mask)
        length = min(length, (addr | mask) - addr + 1)
        view = entry.target_as.current_map


def access_size(mr: MemoryRegion, length: int, offset: int) -> int:
    """QEMU's memory_access_size: valid.max (0 means 4), natural alignment, remaining, power of two."""
    ops = mr.ops
    limit = ops.valid.max_access_size or 4
    if not ops.impl.unaligned:
        align = offset & -offset
        if align and align < limit:
            limit = align
    length = min(length, limit)
    return 1 << (length.bit_length() - 1)


def _direct(mr: MemoryRegion, is_write: bool) -> bool:
    if is_write:
        return mr.is_ram and not mr.readonly and not mr.is_rom_device and not mr.is_ram_device
    return (mr.is_ram and not mr.is_ram_device) or mr.is_romd


def _ram_piece(mr: MemoryRegion, offset: int, length: int) -> memoryview | None:
    """The host memory of a direct access at ``offset`` that the region and its RAM block both hold (None:
    none, e.g. a view rendered before the region shrank inside an open transaction, or a region sized past
    its RAM block): what is missing reads as a hole instead of looping or touching other memory."""
    block = mr.ram_block
    if block is None:
        return None
    span = min(length, mr.size - offset, len(block.view) - offset)
    return block.view[offset:offset + span] if span > 0 else None


def _prepare_mmio(mr: MemoryRegion) -> None:
    if mr.flush_coalesced_mmio:
        core_of(mr).flush_coalesced()


def read(view: FlatView, addr: int, size: int, attrs: MemTxAttrs) -> tuple[bytes, MemTxResult]:
    out = bytearray()
    result = _OK
    while size > 0:
        mr, offset, length = translate(view, addr, size, False, attrs)
        if attrs.memory and not mr.is_ram:
            result |= _ACCESS
            out += bytes(length)
        elif _direct(mr, False):
            piece = _ram_piece(mr, offset, length)
            if piece is not None:
                length = len(piece)
                out += piece
            else:
                result |= _DECODE
                out += bytes(length)
        else:
            _prepare_mmio(mr)
            length = access_size(mr, length, offset)
            value, res = read_bits(mr, offset, length, attrs)
            out += (value & ((1 << (8 * length)) - 1)).to_bytes(length, "little")
            result |= res
        addr += length
        size -= length
    return bytes(out), RESULTS[result]


def write(view: FlatView, addr: int, data: Any, attrs: MemTxAttrs) -> MemTxResult:
    data = memoryview(data).cast("B")
    pos, size = 0, len(data)
    result = _OK
    while size > 0:
        mr, offset, length = translate(view, addr, size, True, attrs)
        if attrs.memory and not mr.is_ram:
            result |= _ACCESS
        elif _direct(mr, True):
            piece = _ram_piece(mr, offset, length)
            if piece is not None:
                length = len(piece)
                piece[:] = data[pos:pos + length]
                host_write(mr, offset, length)
            else:
                result |= _DECODE
        else:
            _prepare_mmio(mr)
            length = access_size(mr, length, offset)
            value = int.from_bytes(data[pos:pos + length], "little")
            result |= write_bits(mr, offset, value, length, attrs)
        addr += length
        pos += length
        size -= length
    return RESULTS[result]


def write_value(view: FlatView, addr: int, value: int, size: int, attrs: MemTxAttrs) -> MemTxResult:
    """write() of the low ``size`` (1..8) bytes of ``value``, with no bytes in between when one
    dispatch serves it whole (a device register): the common case of write_int()."""
    mr, offset, length = translate(view, addr, size, True, attrs)
    if (length == size and not _direct(mr, True) and not (attrs.memory and not mr.is_ram)
            and access_size(mr, size, offset) == size):
        _prepare_mmio(mr)
        return RESULTS[write_bits(mr, offset, value, size, attrs)]
    return write(view, addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), attrs)


def read_value(view: FlatView, addr: int, size: int, attrs: MemTxAttrs) -> int:
    """read() of ``size`` (1..8) bytes as a little-endian int, the common case of read_int()."""
    mr, offset, length = translate(view, addr, size, False, attrs)
    if (length == size and not _direct(mr, False) and not (attrs.memory and not mr.is_ram)
            and access_size(mr, size, offset) == size):
        _prepare_mmio(mr)
        return read_bits(mr, offset, size, attrs)[0] & ((1 << (8 * size)) - 1)
    return int.from_bytes(read(view, addr, size, attrs)[0], "little")
