"""Enums over linux/kvm.h values, generated at build time into kvm/_header.py.

Member names are the header names without their prefix: ``ExitReason.IO`` is
``KVM_EXIT_IO``, ``Cap.NR_MEMSLOTS`` is ``KVM_CAP_NR_MEMSLOTS``, ``MemFlag.READONLY``
is ``KVM_MEM_READONLY``. ``pip install -e .`` (``make install``) writes the module
from the compiled binding, so the values are the compiler's and the classes static
(editors complete them, mypy checks them).
"""
from __future__ import annotations

import enum

from ._header import (
    Cap,
    ClockFlag,
    DirtyGfnFlag,
    DirtyLogFlag,
    ExitReason,
    InternalError,
    IoDirection,
    IoeventfdFlag,
    IrqchipId,
    IrqfdFlag,
    IrqRoutingType,
    MemFlag,
    MpState,
    SyncReg,
    SystemEventType,
    VcpuEventValid,
    X86Quirk,
)

__all__ = [
    "Cap", "ClockFlag", "DirtyGfnFlag", "DirtyLogFlag", "ExitReason", "InternalError",
    "IoDirection", "IoeventfdFlag", "IrqchipId", "IrqfdFlag", "IrqRoutingType", "MemFlag",
    "MpState", "SyncReg", "SystemEventType", "VcpuEventValid", "X86Quirk", "enum_name",
    "flag_names",
]


def flag_names(flag_type: type[enum.IntFlag], value: int) -> str:
    """``"LOG_DIRTY_PAGES|READONLY"``, or ``"0"`` for no flags; unknown bits in hex."""
    if not value:
        return "0"
    known = flag_type(value & sum(flag_type))
    names = [m.name for m in flag_type if m & known and m.name]
    unknown = value & ~sum(flag_type)
    return "|".join(names + ([hex(unknown)] if unknown else []))


def enum_name(enum_type: type[enum.IntEnum], value: int) -> str:
    """The member name of *value*, or the number itself if the header lacks it."""
    try:
        return enum_type(value).name
    except ValueError:
        return str(value)
