"""`info mtree` text, byte for byte in QEMU 7.2's format (tree, -D, -o, -f).

QEMU prints address-space groups and FlatViews in hash-table order; we print
them in address-space creation order, which is one of the orders QEMU can show.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .dispatch_tree import format_dispatch
from .region import MemoryRegion
from .system import default_system

if TYPE_CHECKING:
    from .address_space import AddressSpace
    from .flatview import FlatView

_M64 = (1 << 64) - 1
INDENT = "  "

#: ``has_memory(space, start, size) -> bool``: True where an accelerator maps the range.
AccelProbe = Callable[["AddressSpace", int, int], bool]


def _mr_size(size: int) -> int:
    """QEMU's MR_SIZE: size - 1, but 0 for an empty region."""
    return 0 if size == 0 else (size - 1) & _M64


def _name(mr: MemoryRegion | None) -> str:
    return "(none)" if mr is None else (mr.name if mr.name is not None else "(null)")


def owner_label(mr: MemoryRegion) -> str | None:
    """QEMU prints QOM paths; we describe the Python owner the same way (None: no owner)."""
    owner = mr.owner
    if owner is None:
        return None
    for attr, form in (("id", "dev id"), ("qom_path", "dev path"), ("path", "obj path")):
        value = getattr(owner, attr, None)
        if isinstance(value, str) and value:
            return f"{form}={value}"
    return f"obj type={type(owner).__name__}"


def owner_suffix(mr: MemoryRegion) -> str:
    """-o: `` owner:{...}`` or `` orphan``."""
    label = owner_label(mr)
    return " orphan" if label is None else f" owner:{{{label}}}"


def _print_mr(mr: MemoryRegion, level: int, base: int, queue: list[MemoryRegion], owner: bool, disabled: bool,
              out: list[str]) -> None:
    cur_start = (base + mr.addr) & _M64
    cur_end = (cur_start + _mr_size(mr.size)) & _M64
    prefix = "[DETECTED OVERFLOW!] " if cur_start < base or cur_end < cur_start else ""
    nv = "nv-" if mr.nonvolatile else ""
    state = "" if mr.enabled else " [disabled]"
    if mr.alias_target is not None and not any(q is mr.alias_target for q in queue):
        queue.append(mr.alias_target)
    if mr.enabled or disabled:
        head = f"{prefix}{INDENT * level}{cur_start:016x}-{cur_end:016x} (prio {mr.priority}, {nv}{mr.kind}): "
        if mr.alias_target is not None:
            line = f"{head}alias {_name(mr)} @{_name(mr.alias_target)} {_alias_span(mr)}{state}"
        else:
            line = f"{head}{_name(mr)}{state}"
        out.append(line + (owner_suffix(mr) if owner else ""))
    for sub in print_order(mr.subregions):
        _print_mr(sub, level + 1, cur_start, queue, owner, disabled, out)


def _alias_span(mr: MemoryRegion) -> str:
    """The target range an alias reaches; a masked alias adds `` mask <mask>`` (our extension)."""
    last = _mr_size(mr.size)
    if mr.alias_mask is None:
        return f"{mr.alias_offset:016x}-{(mr.alias_offset + last) & _M64:016x}"
    end = (mr.alias_offset + _max_masked(last, mr.alias_mask)) & _M64
    return f"{mr.alias_offset:016x}-{end:016x} mask {mr.alias_mask:016x}"


def _max_masked(last: int, mask: int) -> int:
    """The largest ``x & mask`` over 0 <= x <= last."""
    best = last & mask
    for bit in range(last.bit_length()):
        if last >> bit & 1:
            below = (last >> bit + 1 << bit + 1) | ((1 << bit) - 1)  # last with this bit cleared, all lower set
            best = max(best, below & mask)
    return best


def print_order(subs: list[MemoryRegion]) -> list[MemoryRegion]:
    """Address ascending, then priority descending; ties keep list order (newest first)."""
    return sorted(subs, key=lambda s: (s.addr, -s.priority))


def root_groups(spaces: Iterable[AddressSpace] | None) -> list[tuple[MemoryRegion, list[AddressSpace]]]:
    """(root, spaces sorted by name) per distinct root region, in first-seen order."""
    spaces = list(spaces) if spaces is not None else default_system().address_spaces()
    groups: dict[int, tuple[MemoryRegion, list[AddressSpace]]] = {}
    for space in spaces:
        groups.setdefault(id(space.root), (space.root, []))[1].append(space)
    return [(root, sorted(members, key=lambda s: s.name)) for root, members in groups.values()]


def view_groups(spaces: Iterable[AddressSpace] | None) -> list[tuple[FlatView, list[AddressSpace]]]:
    """(FlatView, spaces sharing it) per distinct FlatView, in first-seen order."""
    spaces = list(spaces) if spaces is not None else default_system().address_spaces()
    views: dict[int, tuple[FlatView, list[AddressSpace]]] = {}
    for space in spaces:
        views.setdefault(id(space.current_map), (space.current_map, []))[1].append(space)
    return list(views.values())


def format_tree(spaces: Iterable[AddressSpace] | None = None, owner: bool = False, disabled: bool = False) -> str:
    """`info mtree` (``disabled`` is -D, ``owner`` is -o)."""
    out: list[str] = []
    queue: list[MemoryRegion] = []
    for root, members in root_groups(spaces):
        out.extend(f"address-space: {s.name}" for s in members)
        _print_mr(root, 1, 0, queue, owner, disabled, out)
        out.append("")
    i = 0
    while i < len(queue):
        out.append(f"memory-region: {_name(queue[i])}")
        _print_mr(queue[i], 1, 0, queue, owner, disabled, out)
        out.append("")
        i += 1
    return "\n".join(out) + "\n"


def format_flat(spaces: Iterable[AddressSpace] | None = None, owner: bool = False,
                accel: AccelProbe | None = None, accel_name: str = "KVM", dispatch: bool = False) -> str:
    """`info mtree -f` (``dispatch`` adds -d); ``accel`` marks ranges an accelerator maps exactly."""
    out: list[str] = []
    for number, (view, members) in enumerate(view_groups(spaces)):
        out.append(f"FlatView #{number}")
        for s in members:
            alias = f", alias {_name(s.root.alias_target)}" if s.root.alias_target is not None else ""
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
        if dispatch:
            out.append(format_dispatch(view, view.root).rstrip("\n"))
        out.append("")
    return "\n".join(out) + "\n"


def info_mtree(flatview: bool = False, owner: bool = False, disabled: bool = False,
               spaces: Iterable[AddressSpace] | None = None, accel: AccelProbe | None = None,
               dispatch: bool = False) -> str:
    """The HMP command: ``info_mtree(flatview=True)`` is ``info mtree -f``, ``dispatch`` is -d."""
    if flatview:
        return format_flat(spaces, owner=owner, accel=accel, dispatch=dispatch)
    return format_tree(spaces, owner=owner, disabled=disabled)
