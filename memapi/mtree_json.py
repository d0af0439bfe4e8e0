"""`info mtree` as JSON for scripts (our extension): the region trees and the FlatViews.

Addresses, sizes, offsets and masks are hex strings (``"0xfffc0000"``) so that 64-bit
values survive JSON parsers that use doubles. Each region gets an ``id`` unique in the
document; aliases and flat ranges name their region by id as well as by name.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .flatview import FlatRange, FlatView
from .mtree import AccelProbe, owner_label, print_order, root_groups, view_groups
from .region import UINT64_MAX, MemoryRegion

if TYPE_CHECKING:
    from .address_space import AddressSpace


def mtree_json(spaces: Iterable[AddressSpace] | None = None, accel: AccelProbe | None = None) -> dict[str, Any]:
    """``{"trees": [...], "alias_targets": [...], "flatviews": [...]}``, in `info mtree` order.

    Trees hold every region, disabled ones too (``"enabled": false``). ``accel`` marks
    the ranges an accelerator maps, as the `` KVM`` suffix of ``info mtree -f`` does.
    """
    ids: dict[int, int] = {}
    queue: list[MemoryRegion] = []
    trees = [{"address_spaces": [s.name for s in members], "root": _node(root, 0, ids, queue)}
             for root, members in root_groups(spaces)]
    targets: list[dict[str, Any]] = []
    while len(targets) < len(queue):
        targets.append(_node(queue[len(targets)], 0, ids, queue))
    views = [_view(view, members, ids, accel) for view, members in view_groups(spaces)]
    return {"trees": trees, "alias_targets": targets, "flatviews": views}


def _id(mr: MemoryRegion, ids: dict[int, int]) -> int:
    return ids.setdefault(id(mr), len(ids))


def _type(mr: MemoryRegion) -> str:
    """What the region is: container, io, ram, rom, rom_device, ram_device, alias or iommu."""
    if mr.alias_target is not None:
        return "alias"
    for flag, name in ((mr.is_iommu, "iommu"), (mr.is_ram_device, "ram_device"), (mr.is_rom_device, "rom_device")):
        if flag:
            return name
    if mr.is_ram:
        return "rom" if mr.readonly else "ram"
    return "io" if mr.terminates else "container"


def _node(mr: MemoryRegion, base: int, ids: dict[int, int], queue: list[MemoryRegion]) -> dict[str, Any]:
    start = (base + mr.addr) & UINT64_MAX
    node: dict[str, Any] = {
        "id": _id(mr, ids), "name": mr.name, "type": _type(mr), "kind": mr.kind,
        "addr": hex(mr.addr), "start": hex(start), "size": hex(mr.size), "priority": mr.priority,
        "enabled": mr.enabled, "readonly": mr.readonly, "nonvolatile": mr.nonvolatile, "owner": owner_label(mr),
    }
    if mr.alias_target is not None:
        if not any(q is mr.alias_target for q in queue):
            queue.append(mr.alias_target)
        mask = mr.alias_mask
        node["alias"] = {"target": mr.alias_target.name, "target_id": _id(mr.alias_target, ids),
                         "offset": hex(mr.alias_offset), "mask": None if mask is None else hex(mask)}
    block = mr.ram_block
    if block is not None and block.resizeable:
        node["max_size"] = hex(block.max_length)
    node["subregions"] = [_node(sub, start, ids, queue) for sub in print_order(mr.subregions)]
    return node


def _view(view: FlatView, members: list[AddressSpace], ids: dict[int, int], accel: AccelProbe | None) -> dict[str, Any]:
    return {
        "address_spaces": [{"name": s.name, "root": s.root.name} for s in members],
        "root": None if view.root is None else view.root.name,
        "ranges": [_range(fr, members, ids, accel) for fr in view.ranges],
    }


def _range(fr: FlatRange, members: list[AddressSpace], ids: dict[int, int], accel: AccelProbe | None) -> dict[str, Any]:
    mr, size = fr.mr, fr.end - fr.start
    return {
        "start": hex(fr.start), "size": hex(size), "region": mr.name, "region_id": _id(mr, ids),
        "offset_in_region": hex(fr.offset_in_region), "priority": mr.priority,
        "kind": "rom" if fr.readonly else mr.kind, "readonly": fr.readonly, "nonvolatile": fr.nonvolatile,
        "unmergeable": fr.unmergeable, "romd_mode": fr.romd_mode, "dirty_log_mask": fr.dirty_log_mask,
        "accel": [s.name for s in members if accel is not None and accel(s, fr.start, size)],
    }
