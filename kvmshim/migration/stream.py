"""The stream's framing: a header, then sections, each with its own CRC-32 (docs/migration.md).

    header   MAGIC (8 bytes) | version (u32)
    section  kind (u8) | name length (u8) | name (UTF-8) | payload length (u32) | payload | CRC-32 (u32)

Integers are big-endian, as in QEMU's stream. The CRC covers everything from the kind to the end
of the payload. The reader turns every way a stream can be wrong into a typed error naming the
section: cut short (TruncatedStream), corrupted (ChecksumError), of an unknown kind (UnknownSection),
or bigger than any section the writer makes (StreamError).
"""
from __future__ import annotations

import enum
import struct
import time
import zlib
from dataclasses import dataclass

from .errors import ChecksumError, StreamError, TruncatedStream, UnknownSection
from .transport import Channel

MAGIC = b"KVMSHIM\n"
VERSION = 1
#: No section the writer makes is larger (a RAM batch is at most 1 MiB of pages plus its runs).
MAX_PAYLOAD = 16 << 20
_HEADER = struct.Struct(">8sI")
_HEAD = struct.Struct(">BB")
_U32 = struct.Struct(">I")
_FLUSH_AT = 1 << 20
#: A payload this large is written from where it lies, not copied into the buffer first.
_DIRECT = 64 << 10


class Kind(enum.IntEnum):
    """Section kinds. CONFIG comes first; RAM and ROUND make up the pre-copy rounds; VM, CPU and
    DEVICE carry the state at the stop; END closes the stream. The destination answers LOADED, the
    source then sends COMMIT, and with verification VERIFY, which the destination answers RESULT."""

    CONFIG = 1
    RAM = 2
    ROUND = 3
    VM = 4
    CPU = 5
    DEVICE = 6
    END = 7
    LOADED = 8
    COMMIT = 9
    VERIFY = 10
    RESULT = 11


@dataclass(frozen=True)
class Section:
    kind: Kind
    name: str
    payload: bytes

    @property
    def label(self) -> str:
        """How messages name it: ``RAM section 'pc.ram'``."""
        return f"{self.kind.name} section {self.name!r}"


class StreamWriter:
    """Frames sections into a buffer written to the channel at 1 MiB and on ``flush()`` (a large
    payload goes straight from its parts), no faster than ``bandwidth`` bytes per second (averaged
    since the first write)."""

    def __init__(self, channel: Channel, bandwidth: float | None = None) -> None:
        self.channel = channel
        self.bandwidth = bandwidth
        self.bytes_written = 0
        self._buffer = bytearray()
        self._started: float | None = None

    def header(self) -> None:
        self._buffer += _HEADER.pack(MAGIC, VERSION)

    def section(self, kind: Kind, name: str, *payload: bytes | bytearray | memoryview) -> None:
        """Append one section whose payload is the concatenation of ``payload``."""
        raw_name = name.encode()
        if len(raw_name) > 255:
            raise ValueError(f"{kind.name} section name {name!r} is longer than 255 bytes")
        size = sum(len(part) for part in payload)
        head = _HEAD.pack(kind, len(raw_name)) + raw_name + _U32.pack(size)
        crc = zlib.crc32(head)
        for part in payload:
            crc = zlib.crc32(part, crc)
        self._buffer += head
        if size >= _DIRECT:
            self.flush()
            for part in payload:
                self._write(part)
        else:
            for part in payload:
                self._buffer += part
        self._buffer += _U32.pack(crc)
        if len(self._buffer) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._started is None:
            self._started = time.monotonic()
        self.channel.write(data)
        self.bytes_written += len(data)
        if self.bandwidth:
            ahead = self._started + self.bytes_written / self.bandwidth - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


class StreamReader:
    """Reads the header and then one section at a time from a channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.bytes_read = 0
        self.last: Section | None = None

    def _read(self, count: int, what: str, section: str | None = None) -> bytes:
        data = self.channel.read(count)
        self.bytes_read += len(data)
        if len(data) < count:
            raise TruncatedStream(f"{self.channel.uri}: the stream ended {what} ({len(data)} of {count} bytes)",
                                  section)
        return data

    def header(self) -> None:
        magic, version = _HEADER.unpack(self._read(_HEADER.size, "in the stream header"))
        if magic != MAGIC:
            raise StreamError(f"{self.channel.uri}: not a kvmshim migration stream (magic {magic!r}, "
                              f"expected {MAGIC!r})")
        if version != VERSION:
            raise StreamError(f"{self.channel.uri}: stream version {version}, this kvmshim reads version {VERSION}")

    def section(self) -> Section:
        """The next section; TruncatedStream names the section it was cut in (or the one before)."""
        after = f"after {self.last.label}" if self.last is not None else "after the header"
        first = self.channel.read(_HEAD.size)
        self.bytes_read += len(first)
        if not first:
            raise TruncatedStream(f"{self.channel.uri}: the stream ended {after}, before its END section",
                                  self.last.name if self.last else None)
        if len(first) < _HEAD.size:
            raise TruncatedStream(f"{self.channel.uri}: the stream ended inside a section header {after}")
        code, name_length = _HEAD.unpack(first)
        raw_name = self._read(name_length, f"inside a section header {after}")
        name = raw_name.decode(errors="replace")
        try:
            kind = Kind(code)
        except ValueError:
            raise UnknownSection(f"{self.channel.uri}: unknown section kind {code} (name {name!r}) {after}",
                                 name) from None
        label = f"{kind.name} section {name!r}"
        raw_size = self._read(_U32.size, f"inside {label}", name)
        (size,) = _U32.unpack(raw_size)
        if size > MAX_PAYLOAD:
            raise StreamError(f"{self.channel.uri}: {label} claims {size} bytes (at most {MAX_PAYLOAD})", name)
        payload = self._read(size, f"inside {label}", name)
        (crc,) = _U32.unpack(self._read(_U32.size, f"inside {label}", name))
        if zlib.crc32(payload, zlib.crc32(first + raw_name + raw_size)) != crc:
            raise ChecksumError(f"{self.channel.uri}: {label} is corrupted (CRC-32 mismatch)", name)
        self.last = Section(kind, name, payload)
        return self.last

    def end(self) -> None:
        """After END in a file, which holds one stream: a byte more is a splice or junk, not ignored."""
        more = self.channel.read(1)
        if more:
            self.bytes_read += 1
            raise StreamError(f"{self.channel.uri}: the file goes on after the END section (not one whole "
                              "stream: spliced, or junk appended)", self.last.name if self.last else None)

    def expect(self, kind: Kind) -> Section:
        """The next section, which must be of ``kind``."""
        section = self.section()
        if section.kind != kind:
            raise StreamError(f"{self.channel.uri}: expected a {kind.name} section, got {section.label}",
                              section.name)
        return section
