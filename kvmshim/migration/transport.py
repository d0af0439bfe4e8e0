"""Where a stream goes: ``unix:PATH``, ``tcp:HOST:PORT`` (both ways: the destination answers) or
``file:PATH`` (one way). ``connect`` is the source's end, ``Listener.accept`` the destination's.

A Channel reads through a buffer and writes whole; every OS failure, and a peer that goes silent
for ``idle_timeout`` seconds, becomes a LinkError naming the URI. A file written through a channel
appears under its name only once ``commit()`` is called, so a failed save keeps the old file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from .errors import LinkError, MigrationError

#: How long a peer may stay silent (seconds) before the link counts as cut.
IDLE_TIMEOUT = 60.0
_READ_BUFFER = 1 << 20
_RETRY = (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN)


class UriError(MigrationError, ValueError):
    """A URI that is not ``unix:PATH``, ``tcp:HOST:PORT`` or ``file:PATH``."""


def parse_uri(uri: str) -> tuple[str, str]:
    """(scheme, address) of a migration URI."""
    scheme, sep, address = str(uri).partition(":")
    if not sep or scheme not in ("unix", "tcp", "file") or not address:
        raise UriError(f"migration URI {uri!r}: use unix:PATH, tcp:HOST:PORT or file:PATH")
    if scheme == "tcp":
        _tcp_address(uri, address)
    return scheme, address


def _tcp_address(uri: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UriError(f"migration URI {uri!r}: tcp: needs HOST:PORT (a port from 0 to 65535)")
    return host.strip("[]"), int(port)


class Channel:
    """One end of a link; ``duplex`` when the other end can answer (a socket, not a file)."""

    def __init__(self, uri: str, reader: BinaryIO | None, send: Callable[[Any], object] | None,
                 closers: tuple[Callable[[], None], ...], commit: Callable[[], None] | None = None) -> None:
        self.uri = uri
        self.duplex = reader is not None and send is not None
        self._reader, self._send, self._closers, self._commit = reader, send, closers, commit

    def read(self, count: int) -> bytes:
        """Up to ``count`` bytes: fewer only at the end of the stream."""
        if self._reader is None:
            raise LinkError(f"{self.uri}: this end only writes")
        try:
            return self._reader.read(count)
        except OSError as err:
            raise LinkError(f"{self.uri}: {_describe(err)}") from err

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._send is None:
            raise LinkError(f"{self.uri}: this end only reads")
        try:
            self._send(data)
        except OSError as err:
            raise LinkError(f"{self.uri}: {_describe(err)}") from err

    def commit(self) -> None:
        """A file: flush it and give it its name. A socket: nothing to do."""
        if self._commit is not None:
            try:
                self._commit()
            except OSError as err:
                raise LinkError(f"{self.uri}: {_describe(err)}") from err
            self._commit = None

    def close(self) -> None:
        """Close both directions (idempotent); an uncommitted file is removed."""
        closers, self._closers = self._closers, ()
        for close in closers:
            with contextlib.suppress(OSError):
                close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(err: OSError) -> str:
    if isinstance(err, socket.timeout):
        return "the peer sent nothing for too long (timed out)"
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err} ({name})" if name else str(err.strerror or err)


def _socket_channel(uri: str, sock: socket.socket, idle_timeout: float) -> Channel:
    sock.settimeout(idle_timeout)
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = cast(BinaryIO, sock.makefile("rb", buffering=_READ_BUFFER))

    def shut() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        reader.close()
        sock.close()

    return Channel(uri, reader, sock.sendall, (shut,))


def connect(uri: str, timeout: float = 10.0, idle_timeout: float = IDLE_TIMEOUT) -> Channel:
    """The source's end. A socket destination that is not listening yet is retried for ``timeout``
    seconds; a file is written under a temporary name until the channel is committed."""
    scheme, address = parse_uri(uri)
    if scheme == "file":
        return _file_writer(uri, Path(address))
    target: str | tuple[str, int]
    if scheme == "unix":
        family, target = socket.AF_UNIX, address
    else:
        target = _tcp_address(uri, address)
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect(target)
            return _socket_channel(uri, sock, idle_timeout)
        except OSError as err:
            sock.close()
            if err.errno not in _RETRY or time.monotonic() >= deadline:
                raise LinkError(f"{uri}: cannot connect: {_describe(err)}") from err
            time.sleep(0.02)


def _file_writer(uri: str, path: Path) -> Channel:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        out = open(temporary, "wb")  # noqa: SIM115 - the Channel owns it: commit or discard closes it
    except OSError as err:
        raise LinkError(f"{uri}: cannot write: {_describe(err)}") from err

    def commit() -> None:
        out.flush()
        os.fsync(out.fileno())
        out.close()
        os.replace(temporary, path)

    def discard() -> None:
        out.close()
        if temporary.exists():
            temporary.unlink()

    return Channel(uri, None, out.write, (discard,), commit)


class Listener:
    """The destination's end before a source connects; ``uri`` gives the bound address (tcp port 0:
    the port the kernel chose). A unix socket's file is removed on close."""

    def __init__(self, uri: str, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.scheme, self.address = parse_uri(uri)
        self.idle_timeout = idle_timeout
        self.sock: socket.socket | None = None
        self.uri = uri
        if self.scheme == "file":
            return
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.address
        else:
            host, port = _tcp_address(uri, self.address)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            target = (host, port)
        try:  # whatever fails, the new socket is closed
            if self.scheme == "unix" and Path(self.address).is_socket():
                os.unlink(self.address)  # a stale socket of an earlier run
            sock.bind(target)
            sock.listen(1)
        except OSError as err:
            sock.close()
            raise LinkError(f"{uri}: cannot listen: {_describe(err)}") from err
        self.sock = sock
        if self.scheme == "tcp":
            host, port = sock.getsockname()[:2]
            self.uri = f"tcp:{host}:{port}"

    def accept(self, timeout: float | None = None) -> Channel:
        """The first source to connect (a file: opened for reading); LinkError after ``timeout`` s."""
        if self.sock is None:
            try:
                source = open(self.address, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - the Channel closes it
            except OSError as err:
                raise LinkError(f"{self.uri}: cannot read: {_describe(err)}") from err
            return Channel(self.uri, source, None, (source.close,))
        self.sock.settimeout(timeout)
        try:
            peer, _ = self.sock.accept()
        except OSError as err:
            what = f"no source connected within {timeout:g} s" if isinstance(err, socket.timeout) else _describe(err)
            raise LinkError(f"{self.uri}: {what}") from err
        return _socket_channel(self.uri, peer, self.idle_timeout)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            if self.scheme == "unix" and Path(self.address).is_socket():
                os.unlink(self.address)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
