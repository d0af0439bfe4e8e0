"""ioctl request numbers: names from the compiled binding, fields per asm-generic/ioctl.h.

The number -> name table holds every ``KVM_*`` constant of ``kvm.lib`` whose ioctl
type byte is KVMIO (taken from ``KVM_GET_API_VERSION``, which is ``_IO(KVMIO, 0)``),
so every ioctl the binding declares is named here without copying a number, plus the
generic fd ioctls (FIOCLEX...) that Python's termios module knows.
"""
from __future__ import annotations

import termios

from kvm import lib

# Bit layout of an ioctl number (asm-generic/ioctl.h, used by x86).
_NR_BITS, _TYPE_BITS, _SIZE_BITS = 8, 8, 14
_TYPE_SHIFT = _NR_BITS
_SIZE_SHIFT = _TYPE_SHIFT + _TYPE_BITS
_DIR_SHIFT = _SIZE_SHIFT + _SIZE_BITS
#: Direction bits: userspace writes the argument (kernel reads it) / kernel writes it.
IOC_WRITE, IOC_READ = 1, 2
_DIR_NAMES = {0: "_IOC_NONE", IOC_WRITE: "_IOC_WRITE", IOC_READ: "_IOC_READ",
              IOC_WRITE | IOC_READ: "_IOC_READ|_IOC_WRITE"}


def ioc_type(request: int) -> int:
    return (request >> _TYPE_SHIFT) & ((1 << _TYPE_BITS) - 1)


def ioc_dir(request: int) -> int:
    return request >> _DIR_SHIFT


def ioc_size(request: int) -> int:
    return (request >> _SIZE_SHIFT) & ((1 << _SIZE_BITS) - 1)


KVMIO = ioc_type(lib.KVM_GET_API_VERSION)

#: request number -> name for every KVM ioctl the binding knows, and the generic fd ones.
NAMES: dict[int, str] = {
    value: name for name in dir(lib)
    if name.startswith("KVM_") and isinstance(value := getattr(lib, name), int)
    and ioc_type(value) == KVMIO
} | {getattr(termios, name): name for name in ("FIOCLEX", "FIONCLEX", "FIONBIO", "FIOASYNC")}


def request_name(request: int) -> str:
    """``"KVM_RUN"``, or strace's ``_IOC(_IOC_WRITE, 0xae, 0x90, 0x8)`` for a number the binding lacks."""
    name = NAMES.get(request)
    if name is not None:
        return name
    nr = request & ((1 << _NR_BITS) - 1)
    return (f"_IOC({_DIR_NAMES.get(ioc_dir(request), hex(ioc_dir(request)))}, "
            f"{ioc_type(request):#x}, {nr:#x}, {ioc_size(request):#x})")
