"""Extensions beyond QEMU (issue 8), pure memapi: masked aliases, resizeable RAM, mtree JSON, reprs."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import memapi
from conftest import Recorder, flat
from memapi import MemoryRegion as MR
from memapi import MemoryRegionOps
from memapi.dirty import get_dirty
from memapi.ram import DirtyClient
from oracle_builder import build_machine


class Device:
    """An MMIO device that records (kind, offset, size, value) and reads back its offset."""

    def __init__(self, name: str = "dev", size: int = 0x10) -> None:
        self.log: list[tuple] = []
        self.region = MR.io(name, size, MemoryRegionOps(read=self.read, write=self.write))

    def read(self, mr, offset, size):
        self.log.append(("r", offset, size))
        return offset

    def write(self, mr, offset, value, size):
        self.log.append(("w", offset, size, value))


# ------------------------------------------------------------------ masked aliases
def test_mirror_repeats_ram_and_writes_show_in_every_window(root, space):
    bank = MR.ram("bank", 0x1000)
    root.add_subregion(0x10000, MR.mirror("mirror", bank, 0x3800))
    assert flat(space) == [(0x10000, 0x10FFF, "bank", 0, False), (0x11000, 0x11FFF, "bank", 0, False),
                           (0x12000, 0x12FFF, "bank", 0, False), (0x13000, 0x137FF, "bank", 0, False)]
    space.write(0x11234, b"mirror")
    assert bank.ram_block.read(0x234, 6) == b"mirror"
    assert [space.read(0x10234 + k * 0x1000, 6)[0] for k in range(3)] == [b"mirror"] * 3
    assert space.read(0x13234, 6)[0] == b"mirror"


def test_each_repeat_is_a_listener_range(root, space, listeners, calls):
    bank = MR.ram("bank", 0x1000)
    mirror = MR.mirror("mirror", bank, 0x3000)
    root.add_subregion(0x10000, mirror)
    assert [c[2:] for c in calls if c[:2] == ("region_add", "L1")] == [
        (0x10000, 0x1000, "bank"), (0x11000, 0x1000, "bank"), (0x12000, 0x1000, "bank")]
    calls.clear()
    root.del_subregion(mirror)
    assert [c[2] for c in calls if c[:2] == ("region_del", "L1")] == [0x10000, 0x11000, 0x12000]


def test_high_bits_ignored_with_offset_overlay_and_container_target(root, space):
    """mask 0x1fff over 0x8000: the container's RAM and MMIO repeat; an overlay hides one repeat only."""
    dev = Device()
    board = MR.container("board", 0x4000)
    ram = MR.ram("ram", 0x3000)
    board.add_subregion(0, ram)
    board.add_subregion(0x3000, dev.region)
    root.add_subregion(0x100000, MR.alias("decode", board, 0x2000, 0x8000, mask=0x1FFF))
    root.add_subregion_overlap(0x104000, MR.io("overlay", 0x1000), 1)
    assert flat(space) == [
        (0x100000, 0x100FFF, "ram", 0x2000, False), (0x101000, 0x10100F, "dev", 0, False),
        (0x102000, 0x102FFF, "ram", 0x2000, False), (0x103000, 0x10300F, "dev", 0, False),
        (0x104000, 0x104FFF, "overlay", 0, False), (0x105000, 0x10500F, "dev", 0, False),
        (0x106000, 0x106FFF, "ram", 0x2000, False), (0x107000, 0x10700F, "dev", 0, False)]
    assert space.read_int(0x105004, 4) == 4
    space.write_int(0x107008, 0xAB, 1)
    assert dev.log == [("r", 4, 4), ("w", 8, 1, 0xAB)]


def test_low_bits_not_decoded_reach_the_device_with_the_masked_offset(root, space):
    """mask ~3: a byte-wide device sees every byte of a 4-byte group at the group's offset."""
    dev = Device(size=0x10)
    root.add_subregion(0x2000, MR.alias("lanes", dev.region, 0, 0x10, mask=~3 & 0xF))
    assert len(space.current_map) == 0x10
    assert [space.read_int(0x2000 + x, 1) for x in range(0x10)] == [x & ~3 for x in range(0x10)]
    space.write_int(0x2007, 0x55, 1)
    assert dev.log[-1] == ("w", 4, 1, 0x55)
    assert memapi.dispatch_read(space.current_map.lookup(0x2000).mr, 0, 4)[0] == 0


def test_dispatch_through_the_alias_masks_the_offset():
    dev = Device(size=0x100)
    window = MR.alias("w", dev.region, 0x10, 0x10000, mask=0x3F)
    assert memapi.dispatch_read(window, 0x1234, 2) == (0x10 + (0x1234 & 0x3F), memapi.MemTxResult.OK)
    memapi.dispatch_write(window, 0xFFC1, 7, 1)
    assert dev.log[-1] == ("w", 0x10 + 1, 1, 7)


def test_clipped_by_its_container(root, space):
    bank = MR.ram("bank", 0x100)
    box = MR.container("box", 0x280)
    box.add_subregion(0, MR.mirror("m", bank, 0x10000))
    root.add_subregion(0x4000, box)
    assert flat(space) == [(0x4000, 0x40FF, "bank", 0, False), (0x4100, 0x41FF, "bank", 0, False),
                           (0x4200, 0x427F, "bank", 0, False)]


def test_masked_alias_as_address_space_root_is_not_skipped():
    """flatview_root skips whole-target aliases; a masked one must render its repeats."""
    bank = MR.ram("bank", 0x1000)
    space = memapi.AddressSpace(MR.mirror("mirror-root", bank, 0x2000), "mirror-as")
    assert [(r.start, r.end) for r in space.current_map] == [(0, 0x1000), (0x1000, 0x2000)]
    space.destroy()


@pytest.mark.parametrize("seed", range(40))
def test_masked_render_matches_per_address_decoding(seed):
    """Every address of a random masked window reaches target offset alias_offset + (x & mask), or a hole."""
    rng = random.Random(seed)
    target_size = rng.choice([0x10, 0x40, 0x100, 0x180])
    window = rng.randrange(1, 0x400)
    mask = rng.randrange(0, 0x200) | rng.choice([0, 0x7, 0xF, 0x3F])
    run = (mask + 1) & ~mask
    if -(-window // run) > memapi.MAX_MASK_REPEATS:
        return
    offset = rng.randrange(0, 0x20)
    root = MR.container("root", 1 << 64)
    target = MR.ram("t", target_size)
    root.add_subregion(0x1000, MR.alias("a", target, offset, window, mask=mask))
    view = memapi.flatview.render(root)
    for x in range(window):
        fr = view.lookup(0x1000 + x)
        want = offset + (x & mask)
        if want >= target_size:
            assert fr is None, (hex(x), fr)
        else:
            assert fr is not None and fr.mr is target and fr.offset_in_region + 0x1000 + x - fr.start == want
    assert view.lookup(0x1000 + window) is None


def test_mtree_shows_the_mask():
    root = MR.container("root", 1 << 64)
    bank = MR.ram("bank", 0x1000)
    root.add_subregion(0x10000, MR.mirror("mirror", bank, 0x4000))
    root.add_subregion(0x20000, MR.alias("odd", bank, 0x10, 0x3000, mask=0x12FF))
    space = memapi.AddressSpace(root, "as")
    text = memapi.info_mtree(spaces=[space])
    assert ("    0000000000010000-0000000000013fff (prio 0, ram): alias mirror @bank "
            "0000000000000000-0000000000000fff mask 0000000000000fff\n") in text
    assert ("    0000000000020000-0000000000022fff (prio 0, ram): alias odd @bank "
            "0000000000000010-000000000000130f mask 00000000000012ff\n") in text
    assert repr(root.subregions[-1]) == "<MemoryRegion 'mirror' ram size=0x4000 @0x10000 -> bank+0x0 mask=0xfff prio=0>"
    space.destroy()


@pytest.mark.parametrize("build, rule", [
    (lambda t: MR.mirror("m", t, 0x100000 * 0x1001), "MAX_MASK_REPEATS"),
    (lambda t: MR.alias("a", t, 0, 0x10000, mask=0), "MAX_MASK_REPEATS"),
    (lambda t: MR.alias("a", t, 0, 0x1000, mask=-1), "64-bit unsigned"),
    (lambda t: MR.alias("a", t, 0, 0x1000, mask="0xfff"), "64-bit unsigned"),
    (lambda t: MR.mirror("m", MR.ram("r3", 0x3000), 0x10000), "not a power of two"),
])
def test_bad_masks_are_refused(build, rule):
    with pytest.raises(memapi.InvalidRangeError, match=rule):
        build(MR.ram("t", 0x100000))


def test_growing_a_mirror_past_the_repeat_limit_changes_nothing(root, space):
    mirror = MR.mirror("m", MR.ram("bank", 0x10), 0x100)
    root.add_subregion(0, mirror)
    before = flat(space)
    with pytest.raises(memapi.InvalidRangeError, match=r"'m'.*MAX_MASK_REPEATS"):
        mirror.set_size(0x10 * (memapi.MAX_MASK_REPEATS + 1))
    assert mirror.size == 0x100 and flat(space) == before


def test_ioeventfd_on_a_mirrored_device_is_reported_per_repeat(root, space, listeners, calls):
    dev = Device(size=0x100)
    dev.region.add_eventfd(0x10, 4, True, 1, object())
    root.add_subregion(0x5000, MR.mirror("m", dev.region, 0x300))
    assert [c[2] for c in calls if c[:2] == ("eventfd_add", "L1")] == [0x5010, 0x5110, 0x5210]


# ------------------------------------------------------------------ resizeable RAM
@pytest.fixture
def resizeable(root, space, calls):
    """(region, calls): 0x4000 of resizeable RAM (max 0x10000) at 0x100000; L1 records."""
    log = calls
    mr = MR.resizeable_ram("rr", 0x4000, 0x10000, lambda m, size: log.append(("resized", m.name, size)))
    root.add_subregion(0x100000, mr)
    space.register_listener(Recorder(calls, "L1"))
    calls.clear()
    return mr, calls


def topology(calls):
    return [c for c in calls if c[0] in ("region_add", "region_del", "resized")]


@pytest.mark.parametrize("new", [0x10000, 0x8000, 0x2000, 0x1234])
def test_resize_updates_listeners_then_calls_back(resizeable, new):
    mr, calls = resizeable
    host = mr.ram_block.host_addr
    mr.ram_block.write(0x1000, b"kept")
    mr.ram_resize(new)
    assert topology(calls) == [("region_del", "L1", 0x100000, 0x4000, "rr"),
                               ("region_add", "L1", 0x100000, new, "rr"), ("resized", "rr", new)]
    assert mr.size == new and mr.ram_block.host_addr == host and mr.ram_block.read(0x1000, 4) == b"kept"
    assert mr.ram_block.used_length == new


def test_resize_marks_every_used_page_dirty_and_nothing_beyond(resizeable):
    mr, _ = resizeable
    mr.ram_resize(0x3000)
    for client in DirtyClient:
        assert all(get_dirty(mr, page, 1, client) for page in range(0, 0x3000, 0x1000))
        assert not get_dirty(mr, 0x3000, 0xD000, client)


def test_shrink_then_grow_inside_one_transaction(resizeable):
    mr, calls = resizeable
    with memapi.transaction():
        mr.ram_resize(0x1000)
        mr.ram_resize(0x6000)
        assert topology(calls) == [("resized", "rr", 0x1000), ("resized", "rr", 0x6000)]
    assert topology(calls)[2:] == [("region_del", "L1", 0x100000, 0x4000, "rr"),
                                   ("region_add", "L1", 0x100000, 0x6000, "rr")]


def test_same_size_does_nothing_and_aliases_clip_to_the_used_size(resizeable, root, space):
    mr, calls = resizeable
    mr.ram_resize(0x4000)
    assert calls == []
    root.add_subregion(0x200000, MR.alias("view", mr, 0x1000, 0x8000))
    mr.ram_resize(0x2000)
    assert (0x200000, 0x200FFF, "rr", 0x1000, False) in flat(space)
    assert repr(mr) == "<MemoryRegion 'rr' ram size=0x2000/max 0x10000 @0x100000 prio=0>"


@pytest.mark.parametrize("region, size, error, rule", [
    (lambda mr: MR.ram("fixed", 0x4000), 0x2000, memapi.RegionKindError, "'fixed'.*resizeable RAM"),
    (lambda mr: MR.alias("al", mr, 0, 0x1000), 0x2000, memapi.RegionKindError, "'al'.*resizeable RAM"),
    (lambda mr: mr, 0x10001, memapi.InvalidRangeError, "'rr'.*exceeds max_size 0x10000"),
    (lambda mr: mr, -1, memapi.InvalidRangeError, "'rr'.*size -1"),
])
def test_bad_resizes_change_nothing(resizeable, root, space, region, size, error, rule):
    mr, calls = resizeable
    target = region(mr)
    before = flat(space)
    with pytest.raises(error, match=rule):
        target.ram_resize(size)
    assert calls == [] and flat(space) == before and mr.size == 0x4000 and mr.ram_block.used_length == 0x4000


def test_resizeable_ram_needs_max_at_least_size():
    with pytest.raises(memapi.InvalidRangeError, match=r"'big'.*exceeds max_size"):
        MR.resizeable_ram("big", 0x2000, 0x1000)


# ------------------------------------------------------------------ mtree JSON and reprs
def reprint_tree(doc) -> str:
    """`info mtree -D` text rebuilt from mtree_json's trees (proves the JSON holds every line)."""
    out: list[str] = []

    def node(n, depth):
        start, size = int(n["start"], 16), int(n["size"], 16)
        end = (start + max(size - 1, 0)) & memapi.UINT64_MAX
        what = n["name"]
        if "alias" in n:
            a = n["alias"]
            off = int(a["offset"], 16)
            assert a["mask"] is None  # the oracle machines have none
            what = f"alias {n['name']} @{a['target']} {off:016x}-{off + max(size - 1, 0):016x}"
        state = "" if n["enabled"] else " [disabled]"
        nv = "nv-" if n["nonvolatile"] else ""
        out.append(f"{'  ' * depth}{start:016x}-{end:016x} (prio {n['priority']}, {nv}{n['kind']}): {what}{state}")
        for child in n["subregions"]:
            node(child, depth + 1)

    for tree in doc["trees"]:
        out += [f"address-space: {name}" for name in tree["address_spaces"]]
        node(tree["root"], 1)
        out.append("")
    for target in doc["alias_targets"]:
        out.append(f"memory-region: {target['name']}")
        node(target, 1)
        out.append("")
    return "\n".join(out) + "\n"


def reprint_flat(doc) -> list[str]:
    return [f"{int(r['start'], 16):x}+{int(r['size'], 16):x} {r['kind']} {r['region']} "
            f"@{int(r['offset_in_region'], 16):x}" for view in doc["flatviews"] for r in view["ranges"]]


@pytest.mark.parametrize("machine", ["pc-128m", "q35-256m", "isapc-32m"])
def test_json_holds_what_info_mtree_prints(machine):
    data = Path(__file__).parent / "data" / "oracle"
    built = build_machine((data / f"{machine}.treeD.txt").read_text(), (data / f"{machine}.flat.txt").read_text())
    doc = json.loads(json.dumps(memapi.mtree_json(built.spaces)))
    assert reprint_tree(doc) == built.info_mtree(disabled=True)
    assert reprint_flat(doc) == [f"{r.start:x}+{r.end - r.start:x} {'rom' if r.readonly else r.mr.kind} {r.mr.name} "
                                 f"@{r.offset_in_region:x}" for view, _ in memapi.mtree.view_groups(built.spaces)
                                 for r in view]
    built.destroy()


def test_json_ids_link_aliases_ranges_and_extensions(root, space):
    bank = MR.ram("bank", 0x1000)
    rr = MR.resizeable_ram("rr", 0x2000, 0x8000)
    root.add_subregion(0x10000, MR.mirror("mirror", bank, 0x2000))
    root.add_subregion(0x20000, rr)
    doc = memapi.mtree_json([space], accel=lambda s, start, size: start == 0x11000)
    mirror, rr_node = doc["trees"][0]["root"]["subregions"]
    assert mirror["type"] == "alias" and mirror["alias"] == {
        "target": "bank", "target_id": doc["alias_targets"][0]["id"], "offset": "0x0", "mask": "0xfff"}
    assert rr_node["max_size"] == "0x8000" and rr_node["size"] == "0x2000" and rr_node["type"] == "ram"
    ranges = doc["flatviews"][0]["ranges"]
    assert [(r["start"], r["region_id"], r["accel"]) for r in ranges] == [
        ("0x10000", mirror["alias"]["target_id"], []), ("0x11000", mirror["alias"]["target_id"], ["as"]),
        ("0x20000", rr_node["id"], [])]
    assert doc["flatviews"][0]["address_spaces"] == [{"name": "as", "root": "root"}]


def test_reprs_are_readable(root, space):
    ram = MR.ram("ram", 0x2000)
    root.add_subregion(0x1000, ram)
    ro = MR.alias("ro", ram, 0, 0x1000)
    ro.set_readonly(True)
    root.add_subregion_overlap(0x8000, ro, 2)
    assert repr(ram) == "<MemoryRegion 'ram' ram size=0x2000 @0x1000 prio=0>"
    assert repr(space.current_map) == "<FlatView root=root ranges=2>"
    assert repr(space.current_map.ranges[1]) == "<FlatRange 0x8000-0x8fff ram @0x0 ro>"
    section = memapi.MemoryRegionSection.of(space.current_map.ranges[1], space.current_map)
    assert repr(section) == "<Section 0x8000+0x1000 ram @0x0 ro>"
