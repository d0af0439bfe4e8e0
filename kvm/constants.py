"""Enums over linux/kvm.h values, built at import from the compiled binding.

Member names are the header names without their prefix: ``ExitReason.IO`` is
``KVM_EXIT_IO``, ``Cap.NR_MEMSLOTS`` is ``KVM_CAP_NR_MEMSLOTS``, ``MemFlag.READONLY``
is ``KVM_MEM_READONLY``.
"""
from __future__ import annotations

import enum

from ._kvm_cffi import lib

_IO_DIRECTIONS = {"KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT"}


def _members(prefix: str, exclude: set[str] = set()) -> dict[str, int]:
    return {
        name[len(prefix):]: getattr(lib, name)
        for name in dir(lib)
        if name.startswith(prefix) and name not in exclude
    }


ExitReason = enum.IntEnum("ExitReason", _members("KVM_EXIT_", _IO_DIRECTIONS), module=__name__)
IoDirection = enum.IntEnum("IoDirection", _members("KVM_EXIT_IO_"), module=__name__)
Cap = enum.IntEnum("Cap", _members("KVM_CAP_"), module=__name__)
MemFlag = enum.IntFlag("MemFlag", _members("KVM_MEM_"), module=__name__)
IoeventfdFlag = enum.IntFlag("IoeventfdFlag", _members("KVM_IOEVENTFD_FLAG_"), module=__name__)
SyncReg = enum.IntFlag("SyncReg", _members("KVM_SYNC_X86_"), module=__name__)
DirtyGfnFlag = enum.IntFlag("DirtyGfnFlag", _members("KVM_DIRTY_GFN_F_"), module=__name__)
DirtyLogFlag = enum.IntFlag(
    "DirtyLogFlag",
    {"MANUAL_PROTECT_ENABLE": lib.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
     "INITIALLY_SET": lib.KVM_DIRTY_LOG_INITIALLY_SET},
    module=__name__,
)


def flag_names(flag_type: type[enum.IntFlag], value: int) -> str:
    """``"LOG_DIRTY_PAGES|READONLY"``, or ``"0"`` for no flags."""
    return (flag_type(value).name or hex(value)) if value else "0"


def enum_name(enum_type: type[enum.IntEnum], value: int) -> str:
    """The member name of *value*, or the number itself if the header lacks it."""
    try:
        return enum_type(value).name
    except ValueError:
        return str(value)
