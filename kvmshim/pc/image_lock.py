"""QEMU's image locking (block/file-posix.c): an OFD read lock on one byte per permission a user
takes (100 + bit) and one per permission it does not share (200 + bit). kvmshim takes the bytes
QEMU's IDE disk takes, so two writers of one image, kvmshim or QEMU, in one process or two,
refuse each other instead of interleaving their writes.
"""
from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from ..errors import KvmshimError

PERM_BASE, SHARED_BASE = 100, 200
CONSISTENT_READ, WRITE = 0, 1  # BLK_PERM_* bit numbers
_NAMES = {CONSISTENT_READ: "consistent read", WRITE: "write"}
#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (and padding).
_FLOCK = struct.Struct("hhqqi4x")


class ImageLockError(KvmshimError):
    """Another process (or another open of the file) uses the image in a way this one cannot share."""


def lock_image(fd: int, path: str | Path, *, write: bool) -> None:
    """Take QEMU's locks for an IDE disk on ``fd`` (consistent read, and write unless read-only;
    nobody else's writes are shared), or raise ImageLockError in QEMU's words, taking none."""
    hint = f"\nIs another process using the image [{path}]?"
    for bit in _perms(write):
        if _held_elsewhere(fd, SHARED_BASE + bit):
            raise ImageLockError(f'Failed to get "{_NAMES[bit]}" lock{hint}')
    if _held_elsewhere(fd, PERM_BASE + WRITE):
        raise ImageLockError(f'Failed to get shared "{_NAMES[WRITE]}" lock{hint}')
    for byte in _bytes(write):
        _set(fd, byte, fcntl.F_RDLCK)


def unlock_image(fd: int, *, write: bool) -> None:
    """Give the locks back (closing ``fd`` does too): the image passes to a migration's destination."""
    for byte in _bytes(write):
        _set(fd, byte, fcntl.F_UNLCK)


def _perms(write: bool) -> tuple[int, ...]:
    return (CONSISTENT_READ, WRITE) if write else (CONSISTENT_READ,)


def _bytes(write: bool) -> list[int]:
    return [PERM_BASE + bit for bit in _perms(write)] + [SHARED_BASE + WRITE]


def _set(fd: int, byte: int, kind: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))


def _held_elsewhere(fd: int, byte: int) -> bool:
    """Whether another open file description holds a lock on ``byte`` (a write lock would conflict)."""
    probe = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
    return bool(_FLOCK.unpack(probe)[0] != fcntl.F_UNLCK)
