"""Host memory behind RAM, ROM and ROM-device regions, with per-client dirty bitmaps.

A RamBlock owns (or borrows) one host mapping and never moves it: listeners may
hand its address to the kernel. Dirty bitmaps are one bit per 4 KiB page, stored
little-endian in bytearrays, the layout KVM_GET_DIRTY_LOG uses, so a bitmap
fetched from KVM can be OR-ed in without conversion.
"""
from __future__ import annotations

import ctypes
import enum
import mmap
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError, InvalidRangeError, RamBlockError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

PAGE_SIZE = 4096
PAGE_BITS = 12

# Python exposes MAP_NORESERVE only from 3.13; the value is Linux's.
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class DirtyClient(enum.IntEnum):
    """Dirty-memory clients, QEMU's DIRTY_MEMORY_* numbers."""

    VGA = 0
    CODE = 1
    MIGRATION = 2


DIRTY_CLIENTS = tuple(DirtyClient)


class RamBlock:
    """One contiguous host buffer: anonymous, file- or fd-backed, or a caller's buffer.

    A resizeable block (``max_size`` given) maps ``max_size`` bytes up front, so a
    resize only changes ``used_length``: the host address never moves.
    """

    def __init__(self, name: str, size: int, *, max_size: int | None = None,
                 resized: Callable[[Any, int], None] | None = None,
                 fd: int = -1, offset: int = 0, shared: bool = False,
                 buffer: WriteableBuffer | None = None) -> None:
        self.name = name
        self.used_length = size
        self.max_length = max_size if max_size is not None else size
        self.resizeable = max_size is not None
        self.resized = resized
        self.fd = fd
        self.fd_offset = offset
        self.dirty: list[bytearray | None] = [None] * len(DIRTY_CLIENTS)
        self._mmap: mmap.mmap | None = None
        length = max(self.max_length, 1)
        target: WriteableBuffer
        if buffer is not None:
            try:
                target = memoryview(buffer).cast("B")
            except TypeError:
                raise ArgumentError(f"RAM block {name!r}: {type(buffer).__name__} is not a buffer") from None
            if target.readonly or target.nbytes < self.max_length:
                raise InvalidRangeError(
                    f"RAM block {name!r}: the buffer must be writable and at least {self.max_length:#x} bytes"
                )
        else:
            target = self._mmap = _map(name, length, fd, offset, shared)
        anchor = (ctypes.c_char * length).from_buffer(target)
        self._anchor: ctypes.Array[ctypes.c_char] | None = anchor
        self.host_addr: int = ctypes.addressof(anchor)
        self.view = memoryview(anchor).cast("B")

    # ------------------------------------------------------------------ data
    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.view[offset:offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.view[offset:offset + len(data)] = data

    def resize(self, used_length: int) -> None:
        """qemu_ram_resize's bookkeeping: the new used length, and every used page dirty for every client."""
        self.used_length = used_length
        pages = (used_length + PAGE_SIZE - 1) >> PAGE_BITS
        for client in DIRTY_CLIENTS:
            bm = self.bitmap(client)
            bm[:] = bytes(len(bm))
            set_bits(bm, 0, pages)

    # ----------------------------------------------------------------- dirty
    @property
    def npages(self) -> int:
        return (self.max_length + PAGE_SIZE - 1) >> PAGE_BITS

    def bitmap(self, client: int) -> bytearray:
        """The client's bitmap, allocated on first use (8-byte multiple, like KVM's)."""
        bm = self.dirty[client]
        if bm is None:
            bm = self.dirty[client] = bytearray(((self.npages + 63) // 64) * 8)
        return bm

    def set_dirty(self, offset: int, length: int, clients: Iterable[int]) -> None:
        """Mark the pages of [offset, offset+length) dirty for each client."""
        if length <= 0:
            return
        first, last = offset >> PAGE_BITS, (offset + length - 1) >> PAGE_BITS
        for client in clients:
            set_bits(self.bitmap(client), first, last - first + 1)

    def merge_bitmap(self, client: int, first_page: int, bits: bytes | bytearray, npages: int) -> None:
        """OR a little-endian bitmap of ``npages`` pages in at ``first_page``."""
        value = int.from_bytes(bits, "little") & ((1 << npages) - 1)
        if value:
            or_bits(self.bitmap(client), first_page, value, npages)

    def take_dirty(self, client: int, first_page: int, npages: int) -> int:
        """Atomically (under the caller's lock) copy and clear bits; returns them as an int."""
        bm = self.dirty[client]
        if bm is None or npages <= 0:
            return 0
        return take_bits(bm, first_page, npages)

    def close(self) -> None:
        """Unmap the host memory (a caller's buffer is only released)."""
        self.view.release()
        self._anchor = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None


def _map(name: str, length: int, fd: int, offset: int, shared: bool) -> mmap.mmap:
    """Anonymous MAP_NORESERVE memory, or the fd's (a private mapping of a read-only file is copy-on-write)."""
    if fd >= 0:
        args = dict(flags=mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE, offset=offset)
    else:
        fd, args = -1, dict(flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
    try:
        return mmap.mmap(fd, length, **args)
    except (OSError, OverflowError, ValueError) as err:
        source = f"fd {fd} at offset {offset:#x}" if fd >= 0 else "anonymous memory"
        raise RamBlockError(f"RAM block {name!r}: cannot map {length:#x} bytes of {source}: {err}") from None


# ---------------------------------------------------------------- bit helpers
def set_bits(bm: bytearray, first: int, count: int) -> None:
    or_bits(bm, first, (1 << count) - 1, count)


def or_bits(bm: bytearray, first: int, value: int, count: int) -> None:
    lo, hi = first >> 3, (first + count + 7) >> 3
    shift = first & 7
    cur = int.from_bytes(bm[lo:hi], "little") | (value << shift)
    bm[lo:hi] = cur.to_bytes(hi - lo, "little")


def take_bits(bm: bytearray, first: int, count: int) -> int:
    lo, hi = first >> 3, (first + count + 7) >> 3
    shift = first & 7
    cur = int.from_bytes(bm[lo:hi], "little")
    mask = ((1 << count) - 1) << shift
    taken = (cur & mask) >> shift
    if taken:
        bm[lo:hi] = (cur & ~mask).to_bytes(hi - lo, "little")
    return taken


def test_bits(bm: bytearray | None, first: int, count: int) -> int:
    if bm is None:
        return 0
    lo, hi = first >> 3, (first + count + 7) >> 3
    return (int.from_bytes(bm[lo:hi], "little") >> (first & 7)) & ((1 << count) - 1)


def memfd(name: str, size: int) -> int:
    """A memfd of ``size`` bytes, for shared or file-like RAM."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd
