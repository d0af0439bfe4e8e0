"""FdObject: the base of Kvm, Vm and Vcpu. Owns one fd and the mmaps made of it."""
from __future__ import annotations

import errno
import mmap
import os
import weakref
from collections.abc import Callable
from typing import TypeVar

from ._cdata import CData
from ._kvm_cffi import ffi, lib
from .constants import Cap, enum_name
from .errors import KvmError
from .state import KvmState

PAGE_SIZE = mmap.PAGESIZE
S = TypeVar("S", bound=KvmState)
F = TypeVar("F", bound="FdObject")
#: Largest table the growing E2BIG retry asks for (KVM's own limits are far below).
MAX_TABLE_ENTRIES = 1 << 16


def _release(fd: int, maps: list[tuple[CData, int]]) -> None:
    for addr, size in maps:
        lib.munmap(addr, size)
    maps.clear()
    os.close(fd)


class FdObject:
    """Owns ``fd``: ``close()``, context exit or garbage collection unmaps and closes it once.

    After close, ``fd`` is -1 and any ioctl fails with ``KvmError`` (EBADF).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._maps: list[tuple[CData, int]] = []
        self._finalizer = weakref.finalize(self, _release, fd, self._maps)
        # Not at interpreter exit: a daemon vCPU thread may still be in KVM_RUN and would
        # touch the unmapped kvm_run on return; the kernel closes everything at exit anyway.
        self._finalizer.atexit = False

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._fd = -1
        self._finalizer()

    def __enter__(self: F) -> F:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd}>"

    def _ioctl(self, name: str, arg: int | CData = 0, desc: str = "") -> int:
        """ioctl(fd, KVM_<name>, arg); an int *arg* is passed by value. Raises KvmError."""
        if isinstance(arg, int):
            arg = ffi.cast("unsigned long", arg)
        ret = lib.ioctl(self._fd, getattr(lib, name), arg)
        if ret < 0:
            raise KvmError(name, ffi.errno, desc)
        return ret

    def _mmap(self, size: int, page_offset: int, what: str) -> CData:
        """Map *size* bytes of the fd (shared, read/write); unmapped on close."""
        addr = lib.mmap(ffi.NULL, size, lib.PROT_READ | lib.PROT_WRITE, lib.MAP_SHARED,
                        self._fd, page_offset * PAGE_SIZE)
        if addr == lib.MAP_FAILED:
            err = ffi.errno
            raise OSError(err, f"mmap of {what} (size={size:#x}): {os.strerror(err)}")
        self._maps.append((addr, size))
        return addr

    def _get_state(self, name: str, kind: type[S], desc: str = "", size: int | None = None) -> S:
        """A new *kind* filled by the ioctl *name*."""
        state = kind(size=size)
        self._ioctl(name, state.c, desc)
        return state

    def _set_state(self, name: str, kind: type[KvmState], state: KvmState, desc: str = "") -> None:
        if not isinstance(state, kind):
            raise TypeError(f"{name}: needs a {kind.__name__}, got {type(state).__name__}")
        self._ioctl(name, state.c, desc)

    def _grow(self, name: str, new: Callable[[int], CData], count: Callable[[CData], int],
              start: int, desc: str = "") -> CData:
        """Call *name* with tables of ``new(n)`` entries until the kernel stops saying E2BIG:
        it either wrote the size it needs (``count``) or the caller doubles *n*."""
        entries = start
        while True:
            table = new(entries)
            try:
                self._ioctl(name, table, desc)
                return table
            except KvmError as err:
                needed = count(table)
                if err.errno != errno.E2BIG or entries >= MAX_TABLE_ENTRIES:
                    raise
                entries = needed if needed > entries else entries * 2


class CheckExtension:
    """KVM_CHECK_EXTENSION, valid on the system fd and (with CHECK_EXTENSION_VM) on a VM fd."""

    _ioctl: Callable[..., int]

    def check_extension(self, cap: int) -> int:
        """The capability's value: 0 if absent, else 1 or a cap-specific number."""
        return self._ioctl("KVM_CHECK_EXTENSION", int(cap), f"cap={enum_name(Cap, cap)}")
