"""RAM in the stream: which regions, the pages of a RAM section, and their dirty bits.

A RAM section carries pages of one region (its name is the region's): the runs of consecutive
pages it covers, a bitmap of which of them are all zero, then the contents of the others:

    runs (u32) | runs x (first page u32, pages u32) | zero bitmap (1 bit per page, LSB first) | pages

Zero pages cost a bit: a destination page that already reads zero is not even written, so an
untouched page stays unallocated there too. The bytes of a page are copied from guest memory
before they are framed, so the CRC matches what is sent even while the guest writes on.
"""
from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping

import memapi
from memapi import PAGE_SIZE, DirtyClient, GlobalDirty, MemoryRegion, MemorySystem

from .errors import ConfigMismatch, MigrationBlocked, StreamError
from .stream import Kind, StreamWriter

#: Pages per RAM section at most (1 MiB of contents).
BATCH_PAGES = 256
ZERO_PAGE = bytes(PAGE_SIZE)
_ZERO_BATCH = bytes(BATCH_PAGES * PAGE_SIZE)
_U32 = struct.Struct(">I")
_RUN = struct.Struct(">II")


def ram_regions(root: MemoryRegion) -> list[MemoryRegion]:
    """The migratable RAM regions of a memory tree, mapped now or not (QEMU migrates every RAM
    block), each block once, in the order of ``root.reachable()``, which both ends of a migration
    share. Two with one name would be ambiguous in the stream: ConfigMismatch."""
    first: dict[int, MemoryRegion] = {}  # id(RAM block): the first region reached that maps it
    for mr in root.reachable():
        if mr.ram_block is not None and mr.migratable:
            first.setdefault(id(mr.ram_block), mr)
    found = list(first.values())
    names = [str(mr.name) for mr in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigMismatch(f"two RAM regions named {twice[0]!r}: the stream names RAM by region")
    return found


def view_of(mr: MemoryRegion) -> memoryview:
    """The host memory of a RAM region (ram_regions returns only regions that have some)."""
    assert mr.ram_block is not None, f"region {mr.name!r} has no RAM"
    return mr.ram_block.view


def pages_of(mr: MemoryRegion) -> int:
    return -(-mr.size // PAGE_SIZE)


def start_tracking(system: MemorySystem, what: str) -> None:
    """Start the MIGRATION client's global dirty tracking for ``what`` (a migration, diff snapshots).
    It is a flag, not a count: a second user would take the first one's dirty bits and stop the
    tracking under it, so it must be off (QEMU too runs one migration at a time)."""
    with system.lock:
        if system.global_dirty_tracking & GlobalDirty.MIGRATION:
            raise MigrationBlocked(f"{what}: dirty tracking for MIGRATION is already in use (a migration, or "
                                   "the diff snapshots of this machine, until their close()): one at a time")
        if not system.global_dirty_log_start(GlobalDirty.MIGRATION):
            raise MigrationBlocked(f"{what}: a memory listener refused to start dirty logging")


def tracking(system: MemorySystem) -> bool:
    """Whether the MIGRATION client's global dirty tracking is on."""
    return bool(system.global_dirty_tracking & GlobalDirty.MIGRATION)


def take_dirty(mr: MemoryRegion) -> list[int]:
    """The MIGRATION client's dirty pages of ``mr`` (synced from KVM and cleared), ascending."""
    count = pages_of(mr)
    snap = memapi.snapshot_and_clear_dirty(mr, 0, mr.size, DirtyClient.MIGRATION)
    return [page for page in snap.dirty_pages() if page < count]


def runs(pages: Iterable[int]) -> Iterator[tuple[int, int]]:
    """(first, count) of each run of consecutive pages in an ascending sequence, at most BATCH_PAGES long."""
    first = last = -2
    for page in pages:
        if page == last + 1 and page - first < BATCH_PAGES:
            last = page
            continue
        if first >= 0:
            yield first, last - first + 1
        first = last = page
    if first >= 0:
        yield first, last - first + 1


class RamSender:
    """Sends pages of the regions and counts them: ``pages`` (zero ones included), ``zero_pages``."""

    def __init__(self, writer: StreamWriter) -> None:
        self.writer = writer
        self.pages = self.zero_pages = 0

    def send_all(self, mr: MemoryRegion) -> None:
        count = pages_of(mr)
        self.send_runs(mr, ((first, min(BATCH_PAGES, count - first)) for first in range(0, count, BATCH_PAGES)))

    def send_pages(self, mr: MemoryRegion, pages: Iterable[int]) -> None:
        self.send_runs(mr, runs(pages))

    def send(self, dirty: Mapping[MemoryRegion, Iterable[int] | None]) -> None:
        """Each region's listed pages; None lists all of them (a first round, a full snapshot)."""
        for mr, pages in dirty.items():
            if pages is None:
                self.send_all(mr)
            else:
                self.send_pages(mr, pages)

    def send_runs(self, mr: MemoryRegion, page_runs: Iterable[tuple[int, int]]) -> None:
        """Batch the runs into sections of at most BATCH_PAGES pages."""
        view = view_of(mr)
        batch: list[tuple[int, int]] = []
        contents: list[memoryview] = []
        zero = size = zeros = 0  # the zero bitmap as an int, bit i for the batch's page i
        for first, count in page_runs:
            if size + count > BATCH_PAGES:
                self._section(mr, batch, zero, contents, size, zeros)
                batch, contents, zero, size, zeros = [], [], 0, 0, 0
            start = first * PAGE_SIZE
            data = bytes(view[start:start + count * PAGE_SIZE])
            batch.append((first, count))
            empty = zero_pages(data)
            for page in empty:
                zero |= 1 << (size + page)
            pages = memoryview(data)
            contents += (pages[at * PAGE_SIZE:(at + n) * PAGE_SIZE] for at, n in stretches(empty, count))
            size, zeros = size + count, zeros + len(empty)
        if batch:
            self._section(mr, batch, zero, contents, size, zeros)

    def _section(self, mr: MemoryRegion, batch: list[tuple[int, int]], zero: int, contents: list[memoryview],
                 size: int, zeros: int) -> None:
        head = _U32.pack(len(batch)) + b"".join(_RUN.pack(first, count) for first, count in batch)
        self.writer.section(Kind.RAM, str(mr.name), head, zero.to_bytes(-(-size // 8), "little"), *contents)
        self.pages += size
        self.zero_pages += zeros


def zero_pages(data: bytes) -> list[int]:
    """The indices of the all-zero pages of ``data``: one comparison if it is all zero, else one
    find() per zero page (a page of zeros is searched at any offset; only aligned ones count)."""
    if data == (_ZERO_BATCH if len(data) == len(_ZERO_BATCH) else bytes(len(data))):
        return list(range(len(data) // PAGE_SIZE))
    found, at = [], data.find(ZERO_PAGE)
    while at >= 0:
        page = -(-at // PAGE_SIZE)
        if data.startswith(ZERO_PAGE, page * PAGE_SIZE):
            found.append(page)
        at = data.find(ZERO_PAGE, (page + 1) * PAGE_SIZE)
    return found


def stretches(empty: list[int], count: int) -> Iterator[tuple[int, int]]:
    """(first, pages) of each run of the ``count`` pages between the zero ones (``empty``, ascending):
    the contents a RAM section carries, as the sender cuts them and the destination places them."""
    start = 0
    for page in [*empty, count]:
        if page > start:
            yield start, page - start
        start = page + 1


def load_pages(mr: MemoryRegion, payload: bytes) -> int:
    """Write a RAM section's pages into ``mr``; every run is checked against the region and the
    contents against the bitmap before the first byte is written. Returns the pages it covered."""
    where = f"RAM section {mr.name!r}"
    if len(payload) < 4:
        raise StreamError(f"{where}: {len(payload)} bytes, too short for its run count", mr.name)
    (count,) = _U32.unpack_from(payload, 0)
    offset = 4 + count * _RUN.size
    if count > BATCH_PAGES or offset > len(payload):
        raise StreamError(f"{where}: {count} runs do not fit in {len(payload)} bytes", mr.name)
    batch: list[tuple[int, int]] = [_RUN.unpack_from(payload, 4 + i * _RUN.size) for i in range(count)]
    limit, total = pages_of(mr), sum(n for _, n in batch)
    for first, n in batch:
        if not n or first + n > limit:
            raise StreamError(f"{where}: pages {first:#x}+{n} are outside the region ({limit:#x} pages)", mr.name)
    raw = payload[offset:offset + -(-total // 8)]
    offset += len(raw)
    zero = int.from_bytes(raw, "little") & ((1 << total) - 1)
    zeros = zero.bit_count()
    if len(raw) * 8 < total or len(payload) - offset != (total - zeros) * PAGE_SIZE:
        raise StreamError(f"{where}: {len(payload) - offset} bytes of contents for {total} pages, "
                          f"{zeros} of them zero", mr.name)
    view, data, bit = view_of(mr), memoryview(payload), 0
    for first, n in batch:
        empty = [i for i in range(n) if zero >> (bit + i) & 1]
        for page in empty:
            at = (first + page) * PAGE_SIZE
            if view[at:at + PAGE_SIZE].tobytes() != ZERO_PAGE:  # an untouched page stays unallocated
                view[at:at + PAGE_SIZE] = ZERO_PAGE
        for start, pages in stretches(empty, n):
            at, length = (first + start) * PAGE_SIZE, pages * PAGE_SIZE
            view[at:at + length] = data[offset:offset + length]
            offset += length
        bit += n
    return total


def page_digests(mr: MemoryRegion) -> bytes:
    """A CRC-32 of every page of ``mr`` (big-endian u32s): what verification compares."""
    view = view_of(mr)
    digests = array("I", (zlib.crc32(view[o:o + PAGE_SIZE]) for o in range(0, mr.size, PAGE_SIZE)))
    digests.byteswap()
    return digests.tobytes()
