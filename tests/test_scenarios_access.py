"""Scenarios 22-26 (the number in ``test_NN_``): unassigned memory, valid rules, splitting, widening, ROM
writes, as docs/memory.md "Accesses" describes them (QEMU's access_with_adjusted_size)."""
from __future__ import annotations

import pytest

import memapi
from memapi import AccessRules, Endianness, MemTxResult
from memapi import MemoryRegion as MR

OK, DECODE = MemTxResult.OK, MemTxResult.DECODE_ERROR


class Device:
    """Byte reads return the low byte of the offset (wider: each byte its own offset); records calls."""

    def __init__(self, endianness=Endianness.LITTLE, valid=AccessRules(), impl=AccessRules()):
        self.calls = []
        self.ops = memapi.MemoryRegionOps(read=self.read, write=self.write, endianness=endianness,
                                          valid=valid, impl=impl)

    def read(self, mr, offset, size):
        self.calls.append(("read", offset, size))
        return int.from_bytes(bytes((offset + i) & 0xFF for i in range(size)), "little")

    def write(self, mr, offset, value, size):
        self.calls.append(("write", offset, value, size))


def test_22_unassigned_memory(space):
    assert space.read(0x1234, 4) == (b"\0\0\0\0", DECODE)
    assert space.write(0x1234, b"\1\2\3\4") == DECODE


def test_22_unassigned_io():
    io_root = MR.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    ports = memapi.AddressSpace(io_root, "I/O")
    assert ports.read(0x80, 4) == (b"\xff\xff\xff\xff", OK)
    assert ports.read(0x80, 1) == (b"\xff", OK)
    assert ports.write(0x80, b"\1") == OK


@pytest.mark.parametrize("valid, offset, size, called", [
    (AccessRules(max_access_size=2), 0, 4, False),
    (AccessRules(unaligned=False), 1, 2, False),
    (AccessRules(min_access_size=4, max_access_size=0), 0, 1, True),
    (AccessRules(accepts=lambda *a: False), 0, 4, False),
])
def test_23_valid_rules(valid, offset, size, called):
    dev = Device(valid=valid)
    mr = MR.io("dev", 0x100, dev.ops)
    value, result = memapi.dispatch_read(mr, offset, size)
    assert (result == OK) is called and bool(dev.calls) is called
    if not called:
        assert value == 0 and result == DECODE


@pytest.mark.parametrize("endian, impl, size, offset, calls, value", [
    (Endianness.LITTLE, AccessRules(max_access_size=1), 4, 0x10,
     [("read", 0x10, 1), ("read", 0x11, 1), ("read", 0x12, 1), ("read", 0x13, 1)], 0x13121110),
    (Endianness.BIG, AccessRules(max_access_size=1), 4, 0x10,
     [("read", 0x10, 1), ("read", 0x11, 1), ("read", 0x12, 1), ("read", 0x13, 1)], 0x13121110),
    (Endianness.LITTLE, AccessRules(), 8, 0x20, [("read", 0x20, 4), ("read", 0x24, 4)], 0x2726252423222120),
    (Endianness.LITTLE, AccessRules(min_access_size=4), 2, 2, [("read", 2, 4)], 0x0302),
])
def test_24_read_split_and_widen(endian, impl, size, offset, calls, value):
    dev = Device(endianness=endian, valid=AccessRules(unaligned=True), impl=impl)
    got, result = memapi.dispatch_read(MR.io("dev", 0x100, dev.ops), offset, size)
    assert dev.calls == calls
    assert got & ((1 << (8 * size)) - 1) == value and result == OK


def test_24_big_endian_8_byte_read_high_word_first():
    dev = Device(endianness=Endianness.BIG)
    got, _ = memapi.dispatch_read(MR.io("dev", 0x100, dev.ops), 0x20, 8)
    assert dev.calls == [("read", 0x20, 4), ("read", 0x24, 4)]
    # The first (lower-address) word lands in the high half, then the whole value is swapped to host order.
    assert got == memapi.dispatch.bswap(0x23222120 << 32 | 0x27262524, 8) == 0x2425262720212223


def test_24_big_endian_widened_read_takes_high_half():
    dev = Device(endianness=Endianness.BIG, valid=AccessRules(unaligned=True), impl=AccessRules(min_access_size=4))
    got, _ = memapi.dispatch_read(MR.io("dev", 0x100, dev.ops), 2, 2)
    assert dev.calls == [("read", 2, 4)]
    assert got == memapi.dispatch.bswap(0x05040302 >> 16, 2)


@pytest.mark.parametrize("endian, impl, size, value, calls", [
    (Endianness.LITTLE, AccessRules(min_access_size=4), 1, 0xAB, [("write", 1, 0x000000AB, 4)]),
    (Endianness.BIG, AccessRules(min_access_size=4), 1, 0xAB, [("write", 1, 0xAB000000, 4)]),
    (Endianness.LITTLE, AccessRules(max_access_size=2), 4, 0xAABBCCDD,
     [("write", 0, 0xCCDD, 2), ("write", 2, 0xAABB, 2)]),
])
def test_24_write_split_and_widen(endian, impl, size, value, calls):
    dev = Device(endianness=endian, valid=AccessRules(unaligned=True), impl=impl)
    offset = calls[0][1]
    assert memapi.dispatch_write(MR.io("dev", 0x100, dev.ops), offset, value, size) == OK
    assert dev.calls == calls


def test_25_address_space_split(root, space):
    dev = Device()
    root.add_subregion(0x1000, MR.io("dev", 0x100, dev.ops))
    assert space.write(0x1000, (0x1122334455667788).to_bytes(8, "little")) == OK
    assert dev.calls == [("write", 0, 0x55667788, 4), ("write", 4, 0x11223344, 4)]
    dev.calls.clear()
    space.read(0x1001, 4)
    assert [(c[1], c[2]) for c in dev.calls] == [(1, 1), (2, 2), (4, 1)]


def test_26_rom_write_dropped(root, space):
    rom = MR.rom("rom", 0x1000, data=b"ROM!")
    root.add_subregion(0xE0000, rom)
    assert space.write(0xE0000, b"\x55\x55") == DECODE
    assert space.read(0xE0000, 4) == (b"ROM!", OK)


def test_26_readonly_alias_over_ram_is_written(root, space):
    ram = MR.ram("ram", 0x1000)
    alias = MR.alias("pam-rom", ram, 0, 0x1000)
    alias.set_readonly(True)
    root.add_subregion(0, alias)
    assert space.write(0x10, b"xy") == OK
    assert space.read(0x10, 2)[0] == b"xy"


def test_cpu_store_through_readonly_alias_is_dropped(root, space):
    """The exit path agrees with the READONLY slot a readonly alias gets; DMA (write) still goes through."""
    ram = MR.ram("ram", 0x1000)
    alias = MR.alias("pam-rom", ram, 0, 0x1000)
    alias.set_readonly(True)
    root.add_subregion(0, alias)
    root.add_subregion(0x10000, MR.ram("other", 0x1000))
    assert space.store(0x20, 0x55, 1) == DECODE
    assert space.store(0x21, 0xBBBB, 2) == DECODE  # unaligned, and across the last byte
    assert space.store(0xFFF, 0xCC, 1) == DECODE
    assert space.read(0x20, 3)[0] == b"\0\0\0" and space.read(0xFFF, 1)[0] == b"\0"


def test_a_store_hands_the_device_its_low_bytes_as_write_int_does(root, space):
    """store(), like write_int() and a KVM exit (whose data is ``size`` bytes), masks the value."""
    got = []
    root.add_subregion(0x3000, MR.io("dev", 0x10, memapi.MemoryRegionOps(
        read=lambda mr, offset, size: 0, write=lambda mr, offset, value, size: got.append(value))))
    space.store(0x3000, 0x1FF, 1)
    space.store(0x3000, -1, 2)
    space.write_int(0x3000, 0x1FF, 1)
    assert got == [0xFF, 0xFFFF, 0xFF]


def test_reservation_hides_and_decodes(root, space):
    root.add_subregion(0, MR.ram("ram", 0x2000))
    root.add_subregion_overlap(0x1000, MR.reservation("kvm-ioapic", 0x1000), 1)
    assert space.read(0x1000, 4) == (b"\0\0\0\0", DECODE)


def test_reentrancy_guard_blocks_nested_access(root, space):
    owner = object()
    inner = []

    def read(mr, offset, size):
        inner.append(space.read(0x2000, 4))
        return 0

    root.add_subregion(0x1000, MR.io("a", 0x100, memapi.MemoryRegionOps(read=read), owner=owner))
    root.add_subregion(0x2000, MR.io("b", 0x100, memapi.MemoryRegionOps(read=read), owner=owner))
    space.read(0x1000, 4)
    assert inner[-1] == (b"\0\0\0\0", MemTxResult.ACCESS_ERROR)


def test_ram_write_marks_dirty_only_while_logging(root, space):
    ram = MR.ram("ram", 0x10000)
    root.add_subregion(0, ram)
    space.write(0x3000, b"x")
    assert not memapi.dirty.get_dirty(ram, 0, 0x10000, memapi.DirtyClient.VGA)
    ram.set_log(True)
    space.write(0x5001, b"xy")
    snap = memapi.snapshot_and_clear_dirty(ram, 0, 0x10000, memapi.DirtyClient.VGA)
    assert snap.dirty_pages() == [5]
    assert not memapi.dirty.get_dirty(ram, 0, 0x10000, memapi.DirtyClient.VGA)
