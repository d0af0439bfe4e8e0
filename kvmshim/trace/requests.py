"""ioctl request numbers: names from the compiled binding, fields per asm-generic/ioctl.h.

The number -> name table holds every ioctl that linux/kvm.h defines for this
architecture (``kvm.IOCTL_NAMES``, values from the compiled binding), so no number is
copied by hand, plus the generic fd ioctls (FIOCLEX...) that Python's termios module
knows. Where two header names share a number (``KVM_GET_ONE_REG`` and ARM's
``KVM_ARM_SET_DEVICE_ADDR``), the one without another architecture's tag wins.
"""
from __future__ import annotations

import re
import termios

from kvm import IOCTL_NAMES, lib

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
_OTHER_ARCH = re.compile(r"KVM_(ARM|ARM64|S390|PPC|MIPS|RISCV|LOONGARCH)_")

#: request number -> name for every KVM ioctl of the header, and the generic fd ones.
NAMES: dict[int, str] = {
    getattr(lib, name): name for name in sorted(IOCTL_NAMES, key=lambda n: not _OTHER_ARCH.match(n))
} | {getattr(termios, name): name for name in ("FIOCLEX", "FIONCLEX", "FIONBIO", "FIOASYNC")}


def request_name(request: int) -> str:
    """``"KVM_RUN"``, or strace's ``_IOC(_IOC_WRITE, 0xae, 0x90, 0x8)`` for a number the binding lacks."""
    name = NAMES.get(request)
    if name is not None:
        return name
    nr = request & ((1 << _NR_BITS) - 1)
    return (f"_IOC({_DIR_NAMES.get(ioc_dir(request), hex(ioc_dir(request)))}, "
            f"{ioc_type(request):#x}, {nr:#x}, {ioc_size(request):#x})")
