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
        return _errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        args = f" [{self.args_desc}]" if self.args_desc else ""
        return f"{self.ioctl}: {self.errno_name} ({self.strerror}){args}"
