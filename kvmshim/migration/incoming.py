"""The destination's side: accept a stream, check it, load it, and answer the source.

``incoming`` loads into a machine built as the source was (same kind, RAM, vCPUs and devices) whose
vCPUs are not running. After END it answers LOADED and waits for COMMIT: only then is the guest
its own, and the caller starts the vCPUs that ran on the source (``IncomingStats.running``, or
``resume``). A stream that breaks anywhere raises a typed error naming the section; the machine
is then half-loaded and must not be run.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import codec
from .errors import LinkError, MigrationError, StreamError
from .layout import MachineLayout, StateLoader
from .ram import page_digests
from .stats import IncomingStats
from .stream import Kind, StreamReader, StreamWriter
from .transport import Channel, Listener

if TYPE_CHECKING:
    from ..base import MachineBase, VcpuThread


def incoming(machine: MachineBase, uri: str | Listener, *, devices: Iterable[object] = (),
             timeout: float | None = None) -> IncomingStats:
    """Wait (up to ``timeout`` s) for a source at ``uri`` (or on a Listener already bound) and load
    its stream into ``machine``; returns once the source has committed (and let go of the disk
    images, which ``machine`` then takes over), the vCPUs still stopped."""
    layout = destination(machine, devices)
    listener = uri if isinstance(uri, Listener) else Listener(uri)
    try:
        channel = listener.accept(timeout)
    finally:
        if listener is not uri:
            listener.close()
    with channel:
        reader = StreamReader(channel)
        stats = load_stream(layout, reader, channel.uri, read_config(reader, layout))
        if channel.duplex:
            _handshake(layout, channel, reader, stats)
    machine.activate_storage()
    return stats


def destination(machine: MachineBase, devices: Iterable[object] = ()) -> MachineLayout:
    if any(runner.running for runner in machine.runners):
        raise MigrationError(f"{machine!r}: stop its vCPUs before loading a stream into it")
    return MachineLayout(machine, devices)


def config_section(reader: StreamReader, where: str = "") -> Any:
    """The header, then the CONFIG section decoded (StreamError, prefixed by ``where``, if it is not)."""
    reader.header()
    section = reader.expect(Kind.CONFIG)
    try:
        return codec.decode(section.payload)
    except codec.CodecError as err:
        raise StreamError(f"{where}{section.label}: {err}", section.name) from err


def read_config(reader: StreamReader, layout: MachineLayout) -> dict[str, Any]:
    """The header and the CONFIG section, checked against ``layout`` (nothing loaded yet)."""
    return layout.check(config_section(reader))


def load_stream(layout: MachineLayout, reader: StreamReader, uri: str, config: dict[str, Any]) -> IncomingStats:
    """Apply the sections after CONFIG (``config``, already read and checked) up to END."""
    loader = StateLoader(layout)
    while True:
        section = reader.section()
        if section.kind == Kind.END:
            loader.finish(section)
            if not reader.channel.duplex:
                reader.end()
            break
        loader.apply(section)
    return IncomingStats(uri, loader.rounds, loader.pages, reader.bytes_read, loader.running, config=config)


def _handshake(layout: MachineLayout, channel: Channel, reader: StreamReader, stats: IncomingStats) -> None:
    """LOADED, then the source's COMMIT; with verification, compare every page's CRC-32 and answer."""
    writer = StreamWriter(channel)
    writer.section(Kind.LOADED, "loaded", codec.encode({"pages": stats.pages}))
    writer.flush()
    try:
        reader.expect(Kind.COMMIT)
    except (LinkError, StreamError) as err:
        raise LinkError(f"{channel.uri}: the source did not commit, so the guest stays there ({err})") from err
    if stats.config.get("verify"):
        _verify(layout, reader, writer, stats)
    stats.bytes_received = reader.bytes_read


def _verify(layout: MachineLayout, reader: StreamReader, writer: StreamWriter, stats: IncomingStats) -> None:
    """Best effort: the guest is ours once COMMIT has come, so a failure leaves ``verified`` None."""
    try:
        theirs = codec.decode(reader.expect(Kind.VERIFY).payload)
        mismatched = 0
        for mr in layout.regions:
            mine, source = page_digests(mr), theirs[mr.name]
            mismatched += sum(mine[i:i + 4] != source[i:i + 4] for i in range(0, len(mine), 4))
        stats.verified, stats.mismatched_pages = mismatched == 0, mismatched
        writer.section(Kind.RESULT, "result", codec.encode({"verified": stats.verified, "mismatched": mismatched}))
        writer.flush()
    except (MigrationError, codec.CodecError, KeyError, TypeError):
        stats.verified = None


def resume(machine: MachineBase, stats: IncomingStats, timeout: float | None = None) -> list[VcpuThread]:
    """Start the vCPUs that ran on the source (``machine.start``); returns their VcpuThreads."""
    return [machine.start(index, timeout) for index, running in enumerate(stats.running) if running]

