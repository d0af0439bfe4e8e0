"""Device state across a migration, on the pure memory core (no KVM): what each model saves comes
back into a fresh one, in the middle of whatever it was doing; a stream that lies gets a ValueError
or TypeError naming the field; the codec refuses anything that is not its own encoding.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memapi
from kvmshim.migration import MigrationBlocked, codec, vmstate
from kvmshim.pc.ata import DRQ, READ, SECTOR, AtaDisk, DiskImage
from kvmshim.pc.testdev import PciTestdev
from kvmshim.pc.vga import TEXT_BASE, TEXT_SIZE
from kvmshim.uart import FCR_FE, IER_RDI
from memapi import MemoryRegion
from test_pc_devices import Pc
from test_pc_ide import Rig, make_image, pattern
from test_uart import FCR, IER, LSR, RBR, Com1
from test_vga_text import Board


def moved(old_machine, new_machine) -> None:
    """Save every device ``find_devices`` finds on one machine and load it into the other."""
    old = dict(vmstate.find_devices(old_machine))
    new = dict(vmstate.find_devices(new_machine))
    assert old.keys() == new.keys()
    with new_machine.memory.system.transaction():
        for name, device in old.items():
            vmstate.load(new[name], codec.decode(codec.encode(vmstate.save(device))), name)


def test_the_pc_board_comes_back_with_its_mappings():
    """PAM shadowing, the SMRAM window, PMBASE, the PCI latch, CMOS and fw_cfg's read position."""
    old, new = Pc(), Pc()
    try:
        old.config_write(0, 0x59, 0x33333330, 4)  # PAM: RAM read/write from 0xc0000
        old.config_write(0, 0x72, 0x4A, 1)  # SMRAM open: the VGA window disabled
        old.config_write(0x0B, 0x40, 0xB001, 4)  # PMBASE 0xb000
        old.config_write(0x0B, 0x80, 1, 1)  # and PMREGMISC: the ACPI registers appear
        old.io_space.write_int(0x70, 0x10, 1)
        old.io_space.write_int(0x510, 0x19, 2)  # fw_cfg: the file directory, two bytes read
        first = [old.io_space.read_int(0x511, 1) for _ in range(2)]
        old.io_space.write_int(0xCF8, 0x80000000 | 0x0B << 8, 4)
        moved(old, new)
        assert new.flat() == old.flat() and new.flat(0xB000, 0xB100) == old.flat(0xB000, 0xB100)
        assert [(r.start, r.mr.name) for r in new.io_space.current_map] == \
            [(r.start, r.mr.name) for r in old.io_space.current_map]
        assert new.io_space.read_int(0xCFC, 4) == old.io_space.read_int(0xCFC, 4)  # the latch, PIIX4 PM's ids
        assert new.io_space.read_int(0x71, 1) == old.io_space.read_int(0x71, 1)
        rest = [new.io_space.read_int(0x511, 1) for _ in range(2)]
        assert first == [0, 0] and rest == [0, 1]  # the big-endian file count goes on where it stopped
    finally:
        old.close()
        new.close()


def test_an_ide_read_half_done_goes_on_in_the_new_function(tmp_path):
    image = make_image(tmp_path / "disk.img")
    source, destination = DiskImage(image), DiskImage(image, active=False)  # QEMU's -incoming: inactive
    old, new = Rig([AtaDisk(source)]), Rig([AtaDisk(destination)])
    try:
        old.config_write(0x20, 0xC001)  # BAR4
        old.config_write(0x04, 0x05, 2)  # I/O decoding and bus master
        old.primary.command(READ, count=2, lba=5)
        head = old.primary.read_data(700)
        moved(SimpleNamespace(system=old.host.memory, io=old.io, memory=old.space, ide=old.ide),
              SimpleNamespace(system=new.host.memory, io=new.io, memory=new.space, ide=new.ide))
        source.inactivate()  # the image passes over, as in a migration's handshake
        destination.activate()
        assert head + new.primary.read_data(2 * SECTOR - 700) == pattern(5) + pattern(6)
        assert new.ide.bar_address(4) == 0xC000 and new.space.lookup(0xC000).mr.name == "piix-bmdma"
    finally:
        old.close()
        new.close()


def test_the_vga_registers_come_back_and_the_screen_with_its_buffer():
    old, new = Board(), Board()
    try:
        old.put(3, 7, "migrated", 0x1E)
        old.crtc(0x0E, 0x01)  # cursor high
        old.out(0x3C8, 5)
        for value in (10, 20, 30):  # DAC entry 5
            old.out(0x3C9, value)
        moved(old, new)
        new.vga.text.ram_block.write(0, old.vga.text.ram_block.read(0, TEXT_SIZE))  # RAM: migrated as RAM
        assert new.vga.screen() == old.vga.screen() and new.vga.refresh() == old.vga.screen()
        assert new.memory.read_int(TEXT_BASE, 1) == old.memory.read_int(TEXT_BASE, 1)
    finally:
        old.close()
        new.close()


def test_the_uart_comes_back_with_its_fifo_and_raises_its_line():
    old, new = Com1(), Com1()
    old.write(FCR, FCR_FE)
    old.write(IER, IER_RDI)
    old.uart.receive(b"hi")
    assert old.level == 1
    moved(SimpleNamespace(system=MemoryRegion.container("m", 1 << 20), io=old.io, memory=old.space),
          SimpleNamespace(system=MemoryRegion.container("m", 1 << 20), io=new.io, memory=new.space))
    assert new.irq == [1] and new.read(LSR) & 1
    assert bytes((new.read(RBR), new.read(RBR))) == b"hi" and new.level == 0


def test_pci_testdev_rearms_its_test_and_keeps_the_counts():
    old, new = PciTestdev(), PciTestdev()
    try:
        old._write(0, 1, 1, 0)  # arm mmio-wildcard-eventfd
        old.current.count_write()
        vmstate.load(new, codec.decode(codec.encode(vmstate.save(old))), "pci-testdev/0")
        assert new.current_test == 1 and new.current.count == 1 and new.mmio.ioeventfds
    finally:
        old.close()
        new.close()


@pytest.mark.parametrize("field, value, phrase", [
    ("index", 500, "mc146818rtc index: 500 is outside 0..127"),
    ("cmos", b"short", "cmos: 5 bytes, expected 128 bytes"),
    ("index", "ten", "index: a str, expected int"),
    ("index", True, "index: a bool, expected int"),
])
def test_a_lying_stream_gets_an_error_naming_the_field(field, value, phrase):
    pc = Pc()
    try:
        cmos = dict(vmstate.find_devices(pc))["mc146818rtc/0"]
        state = {**vmstate.save(cmos), field: value}
        with pytest.raises((ValueError, TypeError), match=phrase):
            vmstate.load(cmos, state, "mc146818rtc/0")
    finally:
        pc.close()


@pytest.mark.parametrize("field, value, phrase", [
    ("end_transfer", "close", "end of transfer 'close'"),
    ("pos", 9000, "transfer at 9000 of 0"),
    ("chs_translation", [], r"a CHS translation \[\] for a disk"),
    ("buffer", b"\0" * 10, "buffer: 10 bytes, expected 8192 bytes"),
])
def test_an_ide_unit_refuses_what_it_could_not_run(tmp_path, field, value, phrase):
    rig = Rig([AtaDisk(DiskImage(make_image(tmp_path / "disk.img")))])
    try:
        state = vmstate.save(rig.ide)
        state["buses"][0]["units"][0][field] = value
        with pytest.raises(ValueError, match=phrase):
            vmstate.load(rig.ide, state, "ide/0")
    finally:
        rig.close()


@pytest.mark.parametrize("end, to_guest", [("sector_read", True), ("sector_write", False)])
def test_an_empty_ide_unit_refuses_a_sector_transfer(tmp_path, end, to_guest):
    """A stream arming a sector transfer on the absent slave: at its last data-port access the guest
    would reach a disk that does not exist (a host exception in the vCPU thread, before the check)."""
    rig = Rig([AtaDisk(DiskImage(make_image(tmp_path / "disk.img")))])
    try:
        state = vmstate.save(rig.ide)
        slave = state["buses"][0]["units"][1]
        slave.update(end_transfer=end, status=slave["status"] | DRQ, pos=0, end=SECTOR, to_guest=to_guest,
                     nsector=1, req_nb_sectors=1)
        with pytest.raises(ValueError, match=f"ide_drive unit 1: no disk for a transfer ending in {end}"):
            vmstate.load(rig.ide, state, "ide/0")
    finally:
        rig.close()


def test_a_region_served_by_a_model_without_state_blocks_migration():
    class Gadget:
        def read(self, mr, offset, size):
            return 0

        def write(self, mr, offset, value, size):
            pass

    io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    io.add_subregion(0x100, MemoryRegion.io("gadget", 4, memapi.MemoryRegionOps(read=Gadget().read,
                                                                                  write=Gadget().write)))
    with pytest.raises(MigrationBlocked, match="region 'gadget' is served by a Gadget, which declares no migration"):
        vmstate.find_devices(SimpleNamespace(system=MemoryRegion.container("m", 1 << 20), io=io))


scalars = st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.binary(max_size=20) | st.text(max_size=10)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.integers(0, 99) | st.text(max_size=5), inner, max_size=4), max_leaves=20)


@given(values)
def test_the_codec_round_trips(value):
    assert codec.decode(codec.encode(value)) == value


@given(st.binary(max_size=200))
def test_the_codec_refuses_what_it_did_not_write(data):
    try:
        value = codec.decode(data)
    except codec.CodecError:
        return
    assert codec.encode(value) == data  # anything it accepts is its own encoding


def test_the_codec_checks_lengths_and_depth():
    with pytest.raises(codec.CodecError, match="needs 4294967295 bytes"):
        codec.decode(b"b\xff\xff\xff\xff")
    with pytest.raises(codec.CodecError, match="nesting deeper than 16"):
        codec.decode(b"l\0\0\0\x01" * 20 + b"N")
    with pytest.raises(TypeError, match="no encoding for set"):
        codec.encode({1, 2})
