"""Thin cffi binding of /dev/kvm: one class per fd (Kvm -> Vm -> Vcpu), in the style of rust-vmm's kvm-ioctls.

Every number comes from linux/kvm.h through the compiled binding ``kvm._kvm_cffi``
(``ffi``/``lib``), which callers may use directly for struct access.
"""
from ._kvm_cffi import ffi, lib
from .constants import (Cap, DirtyGfnFlag, DirtyLogFlag, ExitReason, IoDirection,
                        IoeventfdFlag, MemFlag, SyncReg)
from .errors import KvmError
from .system import Kvm
from .vcpu import COALESCED_RING_ENTRIES, KICK_SIGNAL, Vcpu, install_kick_handler
from .vm import Vm, dirty_bitmap_bytes

__all__ = [
    "Cap", "COALESCED_RING_ENTRIES", "DirtyGfnFlag", "DirtyLogFlag", "ExitReason",
    "IoDirection", "IoeventfdFlag", "KICK_SIGNAL", "Kvm", "KvmError", "MemFlag", "SyncReg",
    "Vcpu", "Vm", "dirty_bitmap_bytes", "ffi", "install_kick_handler", "lib",
]
