"""What the tracer knows of a tracee's KVM fds: /dev/kvm, VMs (with their memslots) and vCPUs.

An fd is known from the syscalls that made it (open of /dev/kvm, KVM_CREATE_VM,
KVM_CREATE_VCPU, dup) or, for fds made out of our sight, from its /proc/PID/fd link.
"""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VCPU_LINK = re.compile(r"anon_inode:kvm-vcpu:(\d+)")


@dataclass(frozen=True)
class Memslot:
    """One memslot as the last successful KVM_SET_USER_MEMORY_REGION left it."""

    as_id: int
    slot: int
    guest_phys_addr: int
    memory_size: int
    flags: str
    userspace_addr: int


class SlotTable:
    """The memslots of one VM, replayed from decoded KVM_SET_USER_MEMORY_REGION arguments."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, int], Memslot] = {}

    def apply(self, region: Mapping[str, Any]) -> None:
        """Record a successful call: size 0 deletes the slot, anything else sets it."""
        key = (region.get("as_id", 0), region["slot"])
        if region["memory_size"]:
            self._slots[key] = Memslot(*key, region["guest_phys_addr"], region["memory_size"],
                                       region["flags"], region["userspace_addr"])
        else:
            self._slots.pop(key, None)

    def get(self, as_id: int, slot: int) -> Memslot | None:
        return self._slots.get((as_id, slot))

    def table(self) -> list[Memslot]:
        """The live slots by (as_id, slot)."""
        return [self._slots[key] for key in sorted(self._slots)]


@dataclass(eq=False)
class VmState:
    serial: int  # 0 for the first VM the trace saw, 1 for the next...
    slots: SlotTable = field(default_factory=SlotTable)


@dataclass(eq=False)
class VcpuState:
    id: int
    run_addr: int | None = None  # the tracee's mapping of its struct kvm_run


@dataclass(frozen=True)
class KvmFd:
    """A tracee fd on /dev/kvm (kind "kvm"), a VM ("vm") or a vCPU ("vcpu"). A vCPU's ``vm``
    is None when its fd predates the trace."""

    kind: str
    vm: VmState | None = None
    vcpu: VcpuState | None = None


class KvmObjects:
    """Numbers the VMs of one trace."""

    def __init__(self) -> None:
        self._serials = itertools.count()

    def new_vm(self) -> VmState:
        return VmState(next(self._serials))

    def from_link(self, target: str) -> KvmFd | None:
        """The KvmFd for a /proc/PID/fd link target, None if it is no KVM fd."""
        vcpu = _VCPU_LINK.fullmatch(target)
        if vcpu is not None:
            return KvmFd("vcpu", None, VcpuState(int(vcpu[1])))
        kind = link_kind(target)
        if kind == "vm":
            return KvmFd("vm", self.new_vm())
        return KvmFd(kind) if kind else None


def link_kind(target: str) -> str | None:
    """"kvm", "vm" or "vcpu" for the /proc/PID/fd link of a KVM fd, else None."""
    if target == "/dev/kvm":
        return "kvm"
    if target == "anon_inode:kvm-vm":
        return "vm"
    return "vcpu" if _VCPU_LINK.fullmatch(target) else None


class FdTable:
    """The KVM fds of one process (threads share it, a fork gets a copy)."""

    def __init__(self, objects: KvmObjects, fds: dict[int, KvmFd] | None = None) -> None:
        self.objects = objects
        self.fds: dict[int, KvmFd] = dict(fds or {})

    def copy(self) -> FdTable:
        return FdTable(self.objects, self.fds)

    def get(self, fd: int) -> KvmFd | None:
        return self.fds.get(fd)

    def set(self, fd: int, kvm_fd: KvmFd | None) -> None:
        if kvm_fd is None:
            self.fds.pop(fd, None)
        else:
            self.fds[fd] = kvm_fd

    def resolve(self, pid: int, fd: int) -> KvmFd | None:
        """The fd from its /proc link when the syscalls did not show where it came from."""
        kvm_fd = self.objects.from_link(_readlink(pid, fd))
        self.set(fd, kvm_fd)
        return kvm_fd

    def rescan(self, pid: int) -> None:
        """Rebuild from /proc/PID/fd (start, exec, close_range), keeping fds whose kind is unchanged."""
        old, self.fds = self.fds, {}
        try:
            numbers = [int(n) for n in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            return
        for fd in numbers:
            target = _readlink(pid, fd)
            known = old.get(fd)
            if known is not None and known.kind == link_kind(target):
                self.fds[fd] = known
            else:
                self.set(fd, self.objects.from_link(target))


def _readlink(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""
