"""`info mtree` text, byte for byte in QEMU 7.2's format (tree, -D, -o, -f).

QEMU prints address-space groups and FlatViews in hash-table order; we print
them in address-space creation order, which is one of the orders QEMU can show.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from . import core
from .region import MemoryRegion

_M64 = (1 << 64) - 1
INDENT = "  "

#: ``has_memory(space, start, size) -> bool``: True where an accelerator maps the range.
AccelProbe = Callable[[object, int, int], bool]


def _mr_size(size: int) -> int:
    """QEMU's MR_SIZE: size - 1, but 0 for an empty region."""
    return 0 if size == 0 else (size - 1) & _M64


def _name(mr: Optional[MemoryRegion]) -> str:
    return "(none)" if mr is None else (mr.name if mr.name is not None else "(null)")


def owner_suffix(mr: MemoryRegion) -> str:
    """-o: QEMU prints QOM paths; we describe the Python owner the same way."""
    owner = mr.owner
    if owner is None:
        return " orphan"
    for attr, form in (("id", "dev id"), ("qom_path", "dev path"), ("path", "obj path")):
        value = getattr(owner, attr, None)
        if isinstance(value, str) and value:
            return f" owner:{{{form}={value}}}"
    return f" owner:{{obj type={type(owner).__name__}}}"


def _print_mr(mr: MemoryRegion, level: int, base: int, queue: list, owner: bool, disabled: bool,
              out: list) -> None:
    cur_start = (base + mr.addr) & _M64
    cur_end = (cur_start + _mr_size(mr.size)) & _M64
    prefix = "[DETECTED OVERFLOW!] " if cur_start < base or cur_end < cur_start else ""
    nv = "nv-" if mr.nonvolatile else ""
    state = "" if mr.enabled else " [disabled]"
    if mr.alias is not None and not any(q is mr.alias for q in queue):
        queue.append(mr.alias)
    if mr.enabled or disabled:
        head = f"{prefix}{INDENT * level}{cur_start:016x}-{cur_end:016x} (prio {mr.priority}, {nv}{mr.kind}): "
        if mr.alias is not None:
            a_end = (mr.alias_offset + _mr_size(mr.size)) & _M64
            line = f"{head}alias {_name(mr)} @{_name(mr.alias)} {mr.alias_offset:016x}-{a_end:016x}{state}"
        else:
            line = f"{head}{_name(mr)}{state}"
        out.append(line + (owner_suffix(mr) if owner else ""))
    for sub in _print_order(mr.subregions):
        _print_mr(sub, level + 1, cur_start, queue, owner, disabled, out)


def _print_order(subs: list[MemoryRegion]) -> list[MemoryRegion]:
    """Address ascending, then priority descending; ties keep list order (newest first)."""
    return sorted(subs, key=lambda s: (s.addr, -s.priority))


def format_tree(spaces: Optional[Iterable] = None, owner: bool = False, disabled: bool = False) -> str:
    """`info mtree` (``disabled`` is -D, ``owner`` is -o)."""
    spaces = list(spaces) if spaces is not None else core.STATE.address_spaces()
    groups: dict[int, tuple[MemoryRegion, list]] = {}
    for space in spaces:
        groups.setdefault(id(space.root), (space.root, []))[1].append(space)
    out: list[str] = []
    queue: list[MemoryRegion] = []
    for root, members in groups.values():
        out.extend(f"address-space: {s.name}" for s in sorted(members, key=lambda s: s.name))
        _print_mr(root, 1, 0, queue, owner, disabled, out)
        out.append("")
    i = 0
    while i < len(queue):
        out.append(f"memory-region: {_name(queue[i])}")
        _print_mr(queue[i], 1, 0, queue, owner, disabled, out)
        out.append("")
        i += 1
    return "\n".join(out) + "\n"


def format_flat(spaces: Optional[Iterable] = None, owner: bool = False,
                accel: Optional[AccelProbe] = None, accel_name: str = "KVM") -> str:
    """`info mtree -f`; ``accel`` marks ranges an accelerator maps exactly (QEMU's has_memory)."""
    spaces = list(spaces) if spaces is not None else core.STATE.address_spaces()
    views: dict[int, tuple] = {}
    for space in spaces:
        views.setdefault(id(space.current_map), (space.current_map, []))[1].append(space)
    out: list[str] = []
    for number, (view, members) in enumerate(views.values()):
        out.append(f"FlatView #{number}")
        for s in members:
            alias = f", alias {_name(s.root.alias)}" if s.root.alias is not None else ""
            out.append(f' AS "{s.name}", root: {_name(s.root)}{alias}')
        out.append(f" Root memory region: {_name(view.root)}")
        if not view.ranges:
            out.append(f"{INDENT}No rendered FlatView")
            out.append("")
            continue
        for fr in view.ranges:
            mr = fr.mr
            nv = "nv-" if fr.nonvolatile else ""
            kind = "rom" if fr.readonly else mr.kind
            at = f" @{fr.offset_in_region:016x}" if fr.offset_in_region else ""
            line = (f"{INDENT}{fr.start:016x}-{(fr.start + _mr_size(fr.end - fr.start)) & _M64:016x}"
                    f" (prio {mr.priority}, {nv}{kind}): {_name(mr)}{at}")
            if owner:
                line += owner_suffix(mr)
            if accel is not None:
                line += "".join(f" {accel_name}" for s in members if accel(s, fr.start, fr.end - fr.start))
            out.append(line)
        out.append("")
    return "\n".join(out) + "\n"


def info_mtree(flatview: bool = False, owner: bool = False, disabled: bool = False,
               spaces: Optional[Iterable] = None, accel: Optional[AccelProbe] = None) -> str:
    """The HMP command: ``info_mtree(flatview=True)`` is ``info mtree -f``."""
    if flatview:
        return format_flat(spaces, owner=owner, accel=accel)
    return format_tree(spaces, owner=owner, disabled=disabled)
