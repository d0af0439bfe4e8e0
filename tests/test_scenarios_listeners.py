"""Scenarios 16-21, 27-30 and 38-39 (the number in ``test_NN_``): transactions, listeners, ioeventfd,
coalescing, mtree, as docs/memory.md "Transactions and listeners" describes them."""
from __future__ import annotations

import memapi
from conftest import PlainRecorder, Recorder
from memapi import MemoryRegion as MR


def ops():
    return memapi.MemoryRegionOps(read=lambda mr, a, s: 0, write=lambda mr, a, v, s: None)


def test_16_nested_transactions(root, space, listeners, calls):
    ram = MR.ram("ram", 0x1000)
    memapi.transaction_begin()
    memapi.transaction_begin()
    root.add_subregion(0, ram)
    memapi.transaction_commit()
    assert calls == []
    ram.set_enabled(False)
    ram.set_enabled(True)
    memapi.transaction_commit()
    assert [c[:2] for c in calls] == [("begin", "L1"), ("begin", "L2"), ("region_add", "L1"),
                                      ("region_add", "L2"), ("commit", "L1"), ("commit", "L2")]


def test_16_context_manager_renders_once(root, space, listeners, calls):
    with memapi.transaction():
        with memapi.transaction():
            root.add_subregion(0, MR.ram("a", 0x1000))
        root.add_subregion(0x1000, MR.ram("b", 0x1000))
    assert [c[0] for c in calls].count("begin") == 2


def test_17_immediate_commit(root, space, listeners, calls):
    root.add_subregion(0, MR.ram("ram", 0x1000))
    assert [c[:2] for c in calls] == [("begin", "L1"), ("begin", "L2"), ("region_add", "L1"),
                                      ("region_add", "L2"), ("commit", "L1"), ("commit", "L2")]


def test_18_delete_order(root, space, listeners, calls):
    ram = MR.ram("ram", 0x1000)
    root.add_subregion(0, ram)
    calls.clear()
    root.del_subregion(ram)
    assert [c[:2] for c in calls] == [("begin", "L1"), ("begin", "L2"), ("region_del", "L2"),
                                      ("region_del", "L1"), ("commit", "L1"), ("commit", "L2")]


def test_19_attribute_change_is_del_add(root, space, listeners, calls):
    ram, other = MR.ram("ram", 0x1000), MR.ram("other", 0x1000)
    root.add_subregion(0, ram)
    root.add_subregion(0x8000, other)
    calls.clear()
    ram.set_readonly(True)
    body = [c[:3] for c in calls if c[0] not in ("begin", "commit")]
    assert body == [("region_del", "L2", 0), ("region_del", "L1", 0), ("region_add", "L1", 0),
                    ("region_add", "L2", 0), ("region_nop", "L1", 0x8000), ("region_nop", "L2", 0x8000)]
    assert space.current_map.ranges[0].readonly


def test_20_dirty_logging_refcount(root, space, listeners, calls):
    ram = MR.ram("ram", 0x1000)
    root.add_subregion(0, ram)
    calls.clear()
    ram.set_log(True)
    assert [c for c in calls if c[0] not in ("begin", "commit")] == [
        ("region_nop", "L1", 0, 0x1000, "ram"), ("region_nop", "L2", 0, 0x1000, "ram"),
        ("log_start", "L1", 0, 0x1000, "ram", 0, 1), ("log_start", "L2", 0, 0x1000, "ram", 0, 1)]
    calls.clear()
    ram.set_log(True)
    ram.set_log(False)
    assert calls == []
    ram.set_log(False)
    assert [c for c in calls if c[0].startswith("log")] == [
        ("log_stop", "L2", 0, 0x1000, "ram", 1, 0), ("log_stop", "L1", 0, 0x1000, "ram", 1, 0)]


def test_20_vga_to_migration_calls_both(root, space, listeners, calls):
    ram = MR.ram("ram", 0x1000)
    root.add_subregion(0, ram)
    ram.set_log(True)
    memapi.global_dirty_log_start(memapi.GlobalDirty.MIGRATION)
    calls.clear()
    ram.set_log(False)
    logs = [c for c in calls if c[0].startswith("log") and c[1] == "L1"]
    assert logs == [("log_stop", "L1", 0, 0x1000, "ram", 5, 4)]
    memapi.global_dirty_log_stop(memapi.GlobalDirty.MIGRATION)


def scenario_21(root):
    r = MR.ram("r", 0x1000)
    r.set_log(True)
    d = MR.io("d", 0x1000, ops())
    root.add_subregion(0x1000, r)
    root.add_subregion(0x4000, d)
    d.add_eventfd(0, 4, True, 7, object())


def test_21_register_replay(root, space, calls):
    space.register_listener(Recorder([], "L1"))
    scenario_21(root)
    l3 = Recorder(calls, "L3")
    space.register_listener(l3)
    assert calls == [("begin", "L3"), ("region_add", "L3", 0x1000, 0x1000, "r"),
                     ("log_start", "L3", 0x1000, 0x1000, "r", 0, 1), ("region_add", "L3", 0x4000, 0x1000, "d"),
                     ("eventfd_add", "L3", 0x4000, 4, True, 7), ("commit", "L3")]
    calls.clear()
    space.unregister_listener(l3)
    assert calls == [("begin", "L3"), ("log_stop", "L3", 0x1000, 0x1000, "r", 1, 0),
                     ("region_del", "L3", 0x1000, 0x1000, "r"), ("region_del", "L3", 0x4000, 0x1000, "d"),
                     ("eventfd_del", "L3", 0x4000, 4, True, 7), ("commit", "L3")]


def test_21_first_eventfd_listener_gets_no_replay(root, space, calls):
    space.register_listener(PlainRecorder([], "plain"))
    scenario_21(root)
    space.register_listener(Recorder(calls, "L3"))
    assert not [c for c in calls if c[0] == "eventfd_add"]


def test_27_romd_toggle(root, space, listeners, calls):
    reads = []
    dev = MR.rom_device("flash", 0x1000, memapi.MemoryRegionOps(
        read=lambda mr, a, s: reads.append(a) or 0x5A, write=lambda mr, a, v, s: None), data=b"\x11\x22")
    root.add_subregion(0x10000, dev)
    assert space.read(0x10000, 2) == (b"\x11\x22", memapi.MemTxResult.OK) and reads == []
    calls.clear()
    dev.rom_device_set_romd(False)
    assert [c[0] for c in calls if c[1] == "L1"] == ["begin", "region_del", "region_add", "commit"]
    assert space.read(0x10000, 1)[0] == b"\x5a" and reads == [0]
    assert "(prio 0, i/o): flash" in memapi.info_mtree(spaces=[space])


def test_28_ioeventfd_move(root, space, listeners, calls):
    dev = MR.io("dev", 0x100, ops())
    dev.add_eventfd(0x10, 4, True, 1, object())
    root.add_subregion(0x1000, dev)
    assert [c for c in calls if c[0] == "eventfd_add"] == [
        ("eventfd_add", "L2", 0x1010, 4, True, 1), ("eventfd_add", "L1", 0x1010, 4, True, 1)]
    calls.clear()
    dev.set_address(0x2000)
    assert [c for c in calls if c[0].startswith("eventfd")] == [
        ("eventfd_del", "L1", 0x1010, 4, True, 1), ("eventfd_del", "L2", 0x1010, 4, True, 1),
        ("eventfd_add", "L2", 0x2010, 4, True, 1), ("eventfd_add", "L1", 0x2010, 4, True, 1)]


def test_29_ioeventfd_wildcard_delete(root, space):
    dev = MR.io("dev", 0x100, ops())
    dev.add_eventfd(0x10, 4, True, 1, object())
    dev.del_eventfd(0x10, 0, False, 0, object())
    assert dev.ioeventfds == []


def test_30_coalesced_immediate(root, space, listeners, calls):
    dev = MR.io("dev", 0x100, ops())
    root.add_subregion(0x5000, dev)
    root.add_subregion_overlap(0x5040, MR.io("overlay", 0x40, ops()), 1)
    calls.clear()
    dev.add_coalescing(0, 0x100)
    assert calls == [("coalesced_io_add", "L1", 0x5000, 0x40), ("coalesced_io_add", "L2", 0x5000, 0x40),
                     ("coalesced_io_add", "L1", 0x5080, 0x80), ("coalesced_io_add", "L2", 0x5080, 0x80)]
    calls.clear()
    dev.clear_coalescing()
    assert calls == [("coalesced_io_del", "L2", 0x5000, 0x40), ("coalesced_io_del", "L1", 0x5000, 0x40),
                     ("coalesced_io_del", "L2", 0x5080, 0x80), ("coalesced_io_del", "L1", 0x5080, 0x80)]


def test_30_coalesced_follow_topology(root, space, listeners, calls):
    dev = MR.io("dev", 0x100, ops())
    dev.add_coalescing(0, 0x100)
    root.add_subregion(0x5000, dev)
    assert [c[0] for c in calls if c[1] == "L1"] == ["begin", "region_add", "coalesced_io_add", "commit"]
    calls.clear()
    root.del_subregion(dev)
    assert [c[0] for c in calls if c[1] == "L1"] == ["begin", "coalesced_io_del", "region_del", "commit"]


def test_38_mtree_ordering(root, space):
    target = MR.ram("target", 0x1000)
    for name in "ABCD":
        alias = MR.alias(name, target, 0, 0x1000)
        root.add_subregion(0x1000, alias)
    root.subregions[0].set_enabled(False)
    lines = memapi.info_mtree(spaces=[space], disabled=True).splitlines()
    assert [line.split("alias ")[1][0] for line in lines if "alias" in line] == list("DCBA")
    assert "memory-region: target" in lines


def test_39_flatview_sharing(root, space):
    bm = MR.container("bm", 1 << 64)
    alias = MR.alias("bus master", root, 0, 1 << 64)
    alias.set_enabled(False)
    bm.add_subregion(0, alias)
    as2 = memapi.AddressSpace(bm, "as2")
    root.add_subregion(0, MR.ram("ram", 0x1000))
    text = memapi.info_mtree(flatview=True, spaces=[space, as2])
    assert ' AS "as2", root: bm\n Root memory region: (none)\n  No rendered FlatView\n' in text
    alias.set_enabled(True)
    assert as2.current_map is space.current_map
    text = memapi.info_mtree(flatview=True, spaces=[space, as2])
    assert text.count("FlatView #") == 1 and ' AS "as", root: root\n AS "as2", root: bm\n' in text


def test_a_mask_that_gains_and_loses_bits_gets_log_start_then_log_stop(root, space, listeners, calls):
    """QEMU's region_nop pass: mask 1 (VGA) -> 4 (MIGRATION) in one commit is log_start(1, 4), then
    log_stop(1, 4) in reverse listener order (hypothesis found this transition)."""
    ram = memapi.MemoryRegion.ram("ram2", 0x1000)
    root.add_subregion(0, ram)
    ram.set_log(True)
    calls.clear()
    with memapi.transaction():
        memapi.global_dirty_log_start(memapi.GlobalDirty.MIGRATION)
        ram.set_log(False)
    logs = [c for c in calls if c[0] in ("log_start", "log_stop")]
    assert logs == [("log_start", "L1", 0, 0x1000, "ram2", 1, 4), ("log_start", "L2", 0, 0x1000, "ram2", 1, 4),
                    ("log_stop", "L2", 0, 0x1000, "ram2", 1, 4), ("log_stop", "L1", 0, 0x1000, "ram2", 1, 4)]
    memapi.global_dirty_log_stop(memapi.GlobalDirty.MIGRATION)
