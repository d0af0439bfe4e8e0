"""Kvm: the /dev/kvm system fd."""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from ._fd import CheckExtension
from .cpuid import CpuidEntry, entries_of, new_table
from .errors import KvmError
from .msrs import MsrIoctls
from .vm import Vm

#: First KVM_GET_SUPPORTED_CPUID table size tried; doubled on E2BIG (the kernel does not say).
_CPUID_START = 64


class Kvm(CheckExtension, MsrIoctls):
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

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: every leaf and the bits KVM can present to a guest."""
        return entries_of(self._grow("KVM_GET_SUPPORTED_CPUID", new_table, lambda t: 0, _CPUID_START))

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs a vCPU's state includes (what QEMU migrates)."""
        return self._index_list("KVM_GET_MSR_INDEX_LIST")

    def msr_feature_index_list(self) -> list[int]:
        """KVM_GET_MSR_FEATURE_INDEX_LIST: the feature MSRs readable with get_feature_msrs()."""
        return self._index_list("KVM_GET_MSR_FEATURE_INDEX_LIST")

    def get_feature_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS on /dev/kvm: what KVM supports of feature MSRs such as
        IA32_ARCH_CAPABILITIES (partial success raises MsrAccessError)."""
        return self._get_msrs(indices, "")
