"""Kvm: the /dev/kvm system fd."""
from __future__ import annotations

import errno
import os

from ._fd import CheckExtension, FdObject
from .errors import KvmError
from .vm import Vm


class Kvm(CheckExtension, FdObject):
    """``/dev/kvm`` opened O_RDWR|O_CLOEXEC. Closing it leaves created VMs usable."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        super().__init__(os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def api_version(self) -> int:
        return self._ioctl("KVM_GET_API_VERSION")

    def vcpu_mmap_size(self) -> int:
        """Size of a vCPU fd's mapping: kvm_run plus the pages after it (PIO, coalesced ring)."""
        return self._ioctl("KVM_GET_VCPU_MMAP_SIZE")

    def create_vm(self, machine_type: int = 0) -> Vm:
        """KVM_CREATE_VM, retried on EINTR as QEMU does."""
        mmap_size = self.vcpu_mmap_size()
        while True:
            try:
                fd = self._ioctl("KVM_CREATE_VM", machine_type, f"type={machine_type}")
                break
            except KvmError as e:
                if e.errno != errno.EINTR:
                    raise
        return Vm(fd, mmap_size)
