"""Decoders of the ioctl arguments that end in a variable-length table: CPUID entries, MSR
lists and values, GSI routes. The fixed header is in the ioctl's size; the entries after it
are read from the tracee as the header's count says (at most MAX_ENTRIES)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvm import IrqchipId, IrqRoutingType, ffi
from kvm.constants import enum_name

from .values import Hex, fields

CData = Any
#: Tables longer than this are cut (a garbage count must not make us read the whole tracee).
MAX_ENTRIES = 4096
Reader = Callable[[int, int], bytes]  # (addr, size) -> bytes; raises UnreadableMemory


class UnreadableMemory(Exception):
    """Tracee memory a decoder needed could not be read."""


@dataclass(frozen=True)
class Table:
    """``ctype`` (ending in the flexible array ``entries``) whose ``count`` field sizes it."""

    ctype: str
    count: str
    entries: str
    entry: Callable[[CData], Any]
    collect: Callable[[list[Any]], Any] = list


def _cpuid_entry(e: CData) -> dict[str, Any]:
    return fields(e, "function", "index", "flags", "eax", "ebx", "ecx", "edx",
                  hex_=("function", "eax", "ebx", "ecx", "edx"))


def _route(r: CData) -> dict[str, Any]:
    out: dict[str, Any] = {"gsi": r.gsi, "type": enum_name(IrqRoutingType, r.type)}
    if r.type == IrqRoutingType.IRQCHIP:
        out.update(irqchip=enum_name(IrqchipId, r.u.irqchip.irqchip), pin=r.u.irqchip.pin)
    elif r.type == IrqRoutingType.MSI:
        out.update(fields(r.u.msi, "address_lo", "address_hi", "data", hex_=("address_lo", "address_hi", "data")))
    return out


_CPUID = Table("struct kvm_cpuid2", "nent", "entries", _cpuid_entry)
_MSR_LIST = Table("struct kvm_msr_list", "nmsrs", "indices", Hex)
_MSRS = Table("struct kvm_msrs", "nmsrs", "entries", lambda e: (Hex(e.index), Hex(e.data)), dict)

#: request name -> its table.
TABLES: dict[str, Table] = {
    "KVM_GET_SUPPORTED_CPUID": _CPUID, "KVM_GET_EMULATED_CPUID": _CPUID,
    "KVM_SET_CPUID2": _CPUID, "KVM_GET_CPUID2": _CPUID,
    "KVM_GET_MSR_INDEX_LIST": _MSR_LIST, "KVM_GET_MSR_FEATURE_INDEX_LIST": _MSR_LIST,
    "KVM_GET_MSRS": _MSRS, "KVM_SET_MSRS": _MSRS,
    "KVM_SET_GSI_ROUTING": Table("struct kvm_irq_routing", "nr", "entries", _route),
}


def decode_table(table: Table, header: CData, arg: int, read: Reader | None) -> dict[str, Any]:
    """``{count: n, entries: [...]}``; only the count without *read* (a failed call) or when the
    entries cannot be read."""
    count = getattr(header, table.count)
    out: dict[str, Any] = {table.count: count}
    if read is None or not count:
        return out
    shown = min(count, MAX_ENTRIES)
    item = dict(ffi.typeof(table.ctype).fields)[table.entries].type.item
    try:
        data = read(arg + ffi.offsetof(table.ctype, table.entries), shown * ffi.sizeof(item))
    except UnreadableMemory:
        return out
    entries = ffi.from_buffer(f"{item.cname}[]", data)
    out[table.entries] = table.collect([table.entry(e) for e in entries])
    return out
