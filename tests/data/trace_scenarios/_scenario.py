"""Shared by the trace scenarios, which run as ``python SCENARIO.py REPORT.json`` under the tracer."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import memapi
from kvm import Kvm, Vm
from listeners.kvm_memory import KVMIoListener, KVMMemoryListener

#: A KVM_CHECK_EXTENSION capability number nothing else asks about: each mark() is a
#: phase boundary in the trace.
MARK_CAP = 0x7E000000
MiB = 1 << 20
NO_OPS = memapi.MemoryRegionOps(read=lambda *a: 0, write=lambda *a: None)


def mark(kvm: Kvm) -> None:
    kvm.check_extension(MARK_CAP)


def report(**data: Any) -> None:
    """Hand *data* to the test (as JSON)."""
    with open(sys.argv[1], "w") as out:
        json.dump(data, out)


class Notifier:
    """An eventfd for MemoryRegion.add_eventfd."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0)

    def fileno(self) -> int:
        return self.fd


class Spaces:
    """A VM with the KVM listeners on a memory and an I/O address space."""

    def __init__(self, vm: Vm) -> None:
        self.root = memapi.MemoryRegion.container("system", 1 << 64)
        self.io_root = memapi.MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.memory = memapi.AddressSpace(self.root, "memory")
        self.io = memapi.AddressSpace(self.io_root, "I/O")
        self.kvm_memory = KVMMemoryListener(vm)
        self.memory.register_listener(self.kvm_memory)
        self.io.register_listener(KVMIoListener(vm))
