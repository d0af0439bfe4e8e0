"""Decoders: ioctl argument structs, dirty bitmaps and kvm_run exits, from tracee bytes.

Struct layouts come from the compiled binding (``kvm.ffi``). Decoded values are plain
dicts, lists, strings and ints; ``Hex`` ints print in hex and ``PageList`` prints as
page ranges, while both stay ordinary ints and lists for JSON and comparisons.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvm import HAVE_SET_USER_MEMORY_REGION2, Cap, ExitReason, IoDirection, IoeventfdFlag, MemFlag, ffi
from kvm.constants import enum_name, flag_names

from .decode_state import STATE_DECODERS
from .decode_tables import TABLES, Reader, UnreadableMemory, decode_table
from .requests import ioc_size
from .values import Hex, PageList
from .values import fields as _fields

__all__ = ["Hex", "PageList", "UnreadableMemory", "decode_arg", "decode_exit", "set_bits", "struct"]

CData = Any


def struct(ctype: str, data: bytes) -> CData:
    """A read-only view of *data* as ``ctype``."""
    return ffi.from_buffer(f"{ctype} *", data)


def set_bits(bitmap: bytes, count: int, first: int = 0) -> PageList:
    """Numbers (from *first*) of the bits set among the first *count* bits of a KVM bitmap."""
    pages = PageList()
    for index, byte in enumerate(bitmap):
        if byte:
            pages.extend(first + index * 8 + bit for bit in range(8)
                         if byte >> bit & 1 and index * 8 + bit < count)
    return pages


def _slot(raw: int) -> dict[str, int]:
    """``slot`` (bits 0-15), plus ``as_id`` (bits 16-31) when it is not 0."""
    return {"slot": raw & 0xFFFF, **({"as_id": raw >> 16} if raw >> 16 else {})}


def _memory_region(r: CData) -> dict[str, Any]:
    return {**_slot(r.slot), "flags": flag_names(MemFlag, r.flags),
            **_fields(r, "guest_phys_addr", "memory_size", "userspace_addr",
                      hex_=("guest_phys_addr", "memory_size", "userspace_addr"))}


def _ioeventfd(e: CData) -> dict[str, Any]:
    return {**_fields(e, "datamatch", "addr", "len", "fd", hex_=("datamatch", "addr")),
            "flags": flag_names(IoeventfdFlag, e.flags)}


def _dirty_log(log: CData) -> dict[str, Any]:
    return {**_slot(log.slot), "dirty_bitmap": Hex(int(ffi.cast("uintptr_t", log.dirty_bitmap)))}


def _clear_dirty_log(log: CData) -> dict[str, Any]:
    return {**_slot(log.slot), **_fields(log, "num_pages", "first_page"),
            "dirty_bitmap": Hex(int(ffi.cast("uintptr_t", log.dirty_bitmap)))}


def _coalesced_zone(z: CData) -> dict[str, Any]:
    return _fields(z, "addr", "size", "pio", hex_=("addr", "size"))


_REGS = ("rip", "rsp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi")


def _regs(r: CData) -> dict[str, Any]:
    """Short form: instruction and stack pointers, flags and the first six GPRs."""
    return _fields(r, *_REGS, hex_=_REGS)


def _enable_cap(c: CData) -> dict[str, Any]:
    return {"cap": _cap_name(c.cap), "flags": c.flags, "args": [Hex(a) for a in c.args]}


def _cap_name(cap: int) -> str | int:
    name = enum_name(Cap, cap)
    return cap if name == str(cap) else f"KVM_CAP_{name}"


#: request name -> (argument struct, decoder) for requests that pass a pointer.
STRUCT_DECODERS: dict[str, tuple[str, Callable[[CData], Any]]] = {
    "KVM_SET_USER_MEMORY_REGION": ("struct kvm_userspace_memory_region", _memory_region),
    "KVM_IOEVENTFD": ("struct kvm_ioeventfd", _ioeventfd),
    "KVM_GET_DIRTY_LOG": ("struct kvm_dirty_log", _dirty_log),
    "KVM_CLEAR_DIRTY_LOG": ("struct kvm_clear_dirty_log", _clear_dirty_log),
    "KVM_REGISTER_COALESCED_MMIO": ("struct kvm_coalesced_mmio_zone", _coalesced_zone),
    "KVM_UNREGISTER_COALESCED_MMIO": ("struct kvm_coalesced_mmio_zone", _coalesced_zone),
    "KVM_GET_REGS": ("struct kvm_regs", _regs),
    "KVM_SET_REGS": ("struct kvm_regs", _regs),
    "KVM_ENABLE_CAP": ("struct kvm_enable_cap", _enable_cap),
    "KVM_IRQ_LINE": ("struct kvm_irq_level", lambda i: _fields(i, "irq", "level")),
    "KVM_CREATE_PIT2": ("struct kvm_pit_config", lambda p: _fields(p, "flags")),
    "KVM_SET_IDENTITY_MAP_ADDR": ("__u64", lambda a: [Hex(a[0])]),  # strace: [address]
    **STATE_DECODERS,
}
if HAVE_SET_USER_MEMORY_REGION2:  # only where linux/kvm.h declares it (Linux 6.8+ headers)
    STRUCT_DECODERS["KVM_SET_USER_MEMORY_REGION2"] = ("struct kvm_userspace_memory_region2", lambda r: {
        **_memory_region(r), **_fields(r, "guest_memfd_offset", "guest_memfd", hex_=("guest_memfd_offset",))})
#: The requests that set a memslot (their decoded argument feeds the slot tables).
MEMORY_REGION_REQUESTS = ("KVM_SET_USER_MEMORY_REGION", "KVM_SET_USER_MEMORY_REGION2")
#: request name -> decoder of a by-value argument.
VALUE_DECODERS: dict[str, Callable[[int], Any]] = {
    "KVM_CHECK_EXTENSION": _cap_name,
    "KVM_SET_TSS_ADDR": Hex,
    "KVM_SET_NR_MMU_PAGES": int,
    "KVM_SET_TSC_KHZ": int,
}


def _irq_line_status(before: CData, after: CData | None) -> dict[str, Any]:
    """KVM_IRQ_LINE_STATUS: the kernel overwrites ``irq`` with the delivery ``status``."""
    out: dict[str, Any] = _fields(before, "irq", "level")
    if after is not None:
        out["status"] = int(ffi.cast("__s32", after.irq))
    return out


def decode_arg(name: str, request: int, arg: int, data: bytes | None, *,
               entry: bytes | None = None, read: Reader | None = None) -> Any:
    """The decoded argument; a pointer (Hex) when its struct is unknown or unreadable.

    *data* is the struct as the call left it (or as it was passed, for a struct the kernel
    only reads), *entry* as it was passed, *read* reads further tracee memory for tables
    (None after a failed call)."""
    if name == "KVM_IRQ_LINE_STATUS" and entry is not None:
        after = struct("struct kvm_irq_level", data) if data is not None else None
        return _irq_line_status(struct("struct kvm_irq_level", entry), after)
    if name in STRUCT_DECODERS or name in TABLES:
        ctype, decoder = STRUCT_DECODERS[name] if name in STRUCT_DECODERS else (TABLES[name].ctype, None)
        if data is None or len(data) < ffi.sizeof(ctype):
            return Hex(arg)
        if decoder is None:
            return decode_table(TABLES[name], struct(ctype, data), arg, read)
        return decoder(struct(ctype, data))
    if name in VALUE_DECODERS:
        return VALUE_DECODERS[name](arg)
    return Hex(arg) if ioc_size(request) else arg


# ----------------------------------------------------------------- KVM_RUN exits
_RUN_SIZE = ffi.sizeof("struct kvm_run")
#: exit reason -> (kvm_run member, fields shown) for exits without data payloads.
_EXIT_FIELDS: dict[int, tuple[str, tuple[str, ...]]] = {
    ExitReason.UNKNOWN: ("hw", ("hardware_exit_reason",)),
    ExitReason.FAIL_ENTRY: ("fail_entry", ("hardware_entry_failure_reason", "cpu")),
    ExitReason.EXCEPTION: ("ex", ("exception", "error_code")),
    ExitReason.INTERNAL_ERROR: ("internal", ("suberror",)),
    ExitReason.SYSTEM_EVENT: ("system_event", ("type",)),
}


def decode_exit(read_mapping: Callable[[int, int], bytes]) -> dict[str, Any]:
    """``{"reason": "IO", ...}`` from the vCPU mapping; ``read_mapping(offset, size)`` reads
    it or raises UnreadableMemory."""
    run = struct("struct kvm_run", read_mapping(0, _RUN_SIZE))
    reason = run.exit_reason
    out: dict[str, Any] = {"reason": enum_name(ExitReason, reason)}
    if reason == ExitReason.IO:
        io = run.io
        out.update(direction=enum_name(IoDirection, io.direction), port=Hex(io.port),
                   size=io.size, count=io.count)
        if io.direction == IoDirection.OUT:
            data = read_mapping(io.data_offset, io.size * io.count)
            out["data"] = [Hex(int.from_bytes(data[i:i + io.size], "little"))
                           for i in range(0, len(data), io.size)]
    elif reason == ExitReason.MMIO:
        mmio = run.mmio
        out.update(phys_addr=Hex(mmio.phys_addr), len=mmio.len, is_write=mmio.is_write)
        if mmio.is_write:
            out["data"] = Hex(int.from_bytes(ffi.buffer(mmio.data)[:mmio.len], "little"))
    elif reason in _EXIT_FIELDS:
        member, names = _EXIT_FIELDS[reason]
        out.update(_fields(getattr(run, member), *names))
    return out
