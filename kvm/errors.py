"""KvmError: a failed ioctl, named with its errno and the arguments it was given."""
from __future__ import annotations

import errno as _errno
import os


class KvmError(OSError):
    """An ioctl on a KVM fd failed.

    ``str(err)`` reads like ``KVM_SET_USER_MEMORY_REGION: EEXIST (File exists)
    [slot=3 gpa=0x1000 size=0x1000 flags=READONLY]``.
    """

    def __init__(self, ioctl: str, errno: int, args_desc: str = "") -> None:
        super().__init__(errno, os.strerror(errno))
        self.ioctl = ioctl
        self.args_desc = args_desc

    @property
    def errno_name(self) -> str:
        """Symbolic errno, e.g. ``"EEXIST"``."""
        code = self.errno or 0
        return _errno.errorcode.get(code, str(code))

    def __str__(self) -> str:
        args = f" [{self.args_desc}]" if self.args_desc else ""
        return f"{self.ioctl}: {self.errno_name} ({self.strerror}){args}"


class KvmUnavailableError(KvmError):
    """The linux/kvm.h the binding was compiled against does not declare *ioctl*: the
    feature cannot be used (rebuild against newer kernel headers). Its errno is ENOTTY."""

    def __init__(self, ioctl: str) -> None:
        super().__init__(ioctl, _errno.ENOTTY)

    def __str__(self) -> str:
        return f"{self.ioctl}: not declared by the linux/kvm.h this binding was compiled against"


class MsrAccessError(KvmError):
    """KVM_GET_MSRS/KVM_SET_MSRS stopped at an MSR: the kernel processes MSRs in order and
    returns how many it handled. ``completed`` holds what was done before ``index``:
    {index: value} read, or the indices written (those writes took effect)."""

    def __init__(self, ioctl: str, index: int, completed: dict[int, int], asked: int) -> None:
        super().__init__(ioctl, _errno.EIO, f"MSR {index:#x} refused after {len(completed)} of {asked} MSRs")
        self.index = index
        self.completed = completed

    def __str__(self) -> str:  # the kernel gave a count, not an errno
        return f"{self.ioctl}: {self.args_desc}"
