"""The PIIX3 IDE function and its ATA disks, driven through the I/O AddressSpace as a guest would
(no KVM), and once through SeaBIOS's int 13h on real KVM with a boot sector of our own.

Every hostile sequence ends with the image byte-identical (sha256) and the channel usable.
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import time
from pathlib import Path

import pytest

import memapi
from kvmshim.errors import KvmshimError
from kvmshim.pc import ata
from kvmshim.pc.ata import (
    ABRT,
    DRDY,
    DRQ,
    DSC,
    ERR,
    IDNF,
    TRANSLATION_LARGE,
    TRANSLATION_LBA,
    TRANSLATION_NONE,
    AtaDisk,
    DiskImage,
    DiskImageError,
    guess_geometry,
)
from kvmshim.pc.cmos import Cmos
from kvmshim.pc.fw_cfg import sercon_port_file
from kvmshim.pc.ide import PiixIde
from kvmshim.pc.image_lock import ImageLockError
from kvmshim.pc.machine import PcMachine, seabios_config
from kvmshim.pc.pci import PciHost
from kvmshim.qemu_config import Boot, Drive, FwCfgFile, IsaDebugExit
from memapi import AddressSpace, MemoryRegion

SECTORS = 4096  # 2 MiB: 4 cylinders of 16 heads x 63 sectors, and some
PRIMARY, SECONDARY = (0x1F0, 0x3F6), (0x170, 0x376)


def pattern(lba: int) -> bytes:
    """Sector ``lba``'s initial contents: its number in every dword, so misplaced reads show."""
    return struct.pack("<I", lba) * 128


def make_image(path: Path, sectors: int = SECTORS) -> Path:
    path.write_bytes(b"".join(pattern(lba) for lba in range(sectors)))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Channel:
    """One IDE channel seen from the guest: task-file registers, data port, control block."""

    def __init__(self, space: AddressSpace, ports: tuple[int, int]) -> None:
        self.space, (self.base, self.ctrl) = space, ports

    def inb(self, reg: int) -> int:
        return self.space.read_int(self.base + reg, 1)

    def outb(self, reg: int, value: int) -> None:
        self.space.write_int(self.base + reg, value, 1)

    @property
    def status(self) -> int:
        return self.inb(7)

    @property
    def alt_status(self) -> int:
        return self.space.read_int(self.ctrl, 1)

    @property
    def error(self) -> int:
        return self.inb(1)

    def control(self, value: int) -> None:
        self.space.write_int(self.ctrl, value, 1)

    def select(self, device: int) -> None:
        self.outb(6, device)

    def command(self, cmd: int, *, count: int = 0, lba: int = 0, lba48: bool = False, slave: bool = False,
                feature: int = 0, chs: tuple[int, int, int] | None = None) -> None:
        dev = 0xB0 if slave else 0xA0
        if chs is not None:
            cyl, head, sector = chs
            regs, dev = (count, sector, cyl & 0xFF, cyl >> 8), dev | head
        else:
            regs, dev = (count & 0xFF, lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF), dev | 0x40
            if not lba48:
                dev |= lba >> 24 & 0xF
        self.select(dev)
        if lba48:
            for reg, value in zip((1, 2, 3, 4, 5), (0, count >> 8, lba >> 24 & 0xFF, lba >> 32 & 0xFF,
                                                    lba >> 40 & 0xFF), strict=True):
                self.outb(reg, value)
        self.outb(1, feature)
        for reg, value in zip((2, 3, 4, 5), regs, strict=True):
            self.outb(reg, value)
        self.outb(7, cmd)

    def read_data(self, nbytes: int, width: int = 2) -> bytes:
        return b"".join(self.space.read_int(self.base, width).to_bytes(width, "little")
                        for _ in range(nbytes // width))

    def write_data(self, data: bytes, width: int = 2) -> None:
        for i in range(0, len(data), width):
            self.space.write_int(self.base, int.from_bytes(data[i:i + width], "little"), width)


class Rig:
    """PIIX3 IDE on an I/O space and a PCI host, IRQ levels recorded per line."""

    def __init__(self, disks, **ide_args) -> None:
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.space = AddressSpace(self.io, "I/O")
        self.irqs: dict[int, list[int]] = {14: [], 15: []}
        self.ide = PiixIde(disks, (self.irqs[14].append, self.irqs[15].append), **ide_args)
        self.host = PciHost([self.ide], memory=MemoryRegion.container("pci", memapi.UINT64_MAX))
        self.host.map(self.io)
        self.ide.map(self.io)
        self.primary, self.secondary = Channel(self.space, PRIMARY), Channel(self.space, SECONDARY)

    def config_read(self, offset: int, size: int = 4) -> int:
        self.space.write_int(0xCF8, 1 << 31 | self.ide.devfn << 8 | offset & 0xFC, 4)
        return self.space.read_int(0xCFC + (offset & 3), size)

    def config_write(self, offset: int, value: int, size: int = 4) -> None:
        self.space.write_int(0xCF8, 1 << 31 | self.ide.devfn << 8 | offset & 0xFC, 4)
        self.space.write_int(0xCFC + (offset & 3), value, size)

    def close(self) -> None:
        self.space.destroy()
        self.ide.close()


@pytest.fixture
def image(tmp_path) -> Path:
    return make_image(tmp_path / "disk.img")


@pytest.fixture
def rig(image):
    machine = Rig([AtaDisk(DiskImage(image))])
    yield machine
    machine.close()


def words(block: bytes) -> list[int]:
    return list(struct.unpack("<256H", block))


def ata_string(block: bytes, first: int, count: int) -> str:
    return b"".join(block[2 * w:2 * w + 2][::-1] for w in range(first, first + count)).decode().rstrip()


# ------------------------------------------------------------------ PCI function
def test_pci_identity_and_legacy_mode(rig):
    assert rig.config_read(0) == 0x70108086
    assert rig.config_read(0x08) >> 8 == 0x010180  # IDE, prog-if 0x80: legacy ports, bus-master capable
    assert rig.config_read(0x06, 2) == 0x0280
    assert rig.config_read(0x20) == 0x01  # BAR4: I/O, not yet placed


def test_bar4_sizing_and_mapping_follow_the_firmware(rig):
    rig.config_write(0x20, 0xFFFFFFFF)
    assert rig.config_read(0x20) == 0xFFFFFFF1  # 16 ports
    rig.config_write(0x20, 0xC000)
    assert rig.ide.bars[4].address is None  # I/O decoding still off
    rig.config_write(0x04, 0x0001, 2)
    names = {r.start: r.mr.name for r in rig.space.current_map if 0xC000 <= r.start < 0xC010}
    assert names == {0xC000: "piix-bmdma", 0xC004: "bmdma", 0xC008: "piix-bmdma", 0xC00C: "bmdma"}
    rig.config_write(0x20, 0xD000)
    assert rig.ide.bmdma.addr == 0xD000 and rig.ide.bars[4].address == 0xD000
    rig.config_write(0x04, 0, 2)
    assert rig.ide.bmdma.parent is None


def test_bus_master_registers(rig):
    rig.config_write(0x20, 0xC000)
    rig.config_write(0x04, 0x0005, 2)
    io = rig.space
    io.write_int(0xC004, 0x12345677, 4)
    assert io.read_int(0xC004, 4) == 0x12345674  # the PRD table is dword aligned
    io.write_int(0xC000, 0x09, 1)
    assert io.read_int(0xC000, 1) == 0x09 and io.read_int(0xC002, 1) & 0x01  # START shows ACTIVE
    rig.primary.command(ata.IDENTIFY)
    assert io.read_int(0xC002, 1) & 0x04  # the channel's interrupt
    io.write_int(0xC002, 0x64, 1)  # INT is write-one-to-clear; bits 5-6 stick
    assert io.read_int(0xC002, 1) == 0x61
    assert io.read_int(0xC000, 2) == 0xFFFF  # command/status take bytes only


# ------------------------------------------------------------------ IDENTIFY and the registers
def test_identify_block(rig):
    ch = rig.primary
    assert ch.status == DRDY | DSC and (ch.inb(2), ch.inb(3), ch.inb(4), ch.inb(5)) == (1, 1, 0, 0)
    ch.command(ata.IDENTIFY)
    assert ch.status == DRDY | DSC | DRQ and rig.irqs[14] == [1, 0]
    block = ch.read_data(512)
    assert ch.status == DRDY | DSC
    w = words(block)
    assert ata_string(block, 27, 20) == "QEMU HARDDISK"
    assert ata_string(block, 10, 10) == "QM00001" and ata_string(block, 23, 4) == "2.5+"
    assert (w[1], w[3], w[6]) == (SECTORS // (16 * 63), 16, 63)  # CHS for the size
    assert (w[54], w[55], w[56]) == (4, 16, 63) and w[57] | w[58] << 16 == 4 * 16 * 63
    assert w[60] | w[61] << 16 == SECTORS and w[100] | w[101] << 16 == SECTORS and w[102] == w[103] == 0
    assert w[49] & 1 << 9 and not w[49] & 1 << 8  # LBA, no DMA
    assert w[83] & 1 << 10 and w[86] & 1 << 10  # LBA48 supported and enabled
    assert w[47] == 0x8010 and w[59] == 0x0110  # READ/WRITE MULTIPLE up to 16, 16 now
    assert w[48] == 1 and w[80] == 0xF0 and w[93] == 0x6001
    assert w[62] == w[63] == w[88] == 0  # no DMA modes offered


def test_identify_caps_the_lba28_count(tmp_path):
    path = tmp_path / "big.img"
    with path.open("wb") as f:
        f.truncate((1 << 28) * 512 + 512 * 1008)  # sparse: LBA48 only past the last LBA28 sector
    machine = Rig([AtaDisk(DiskImage(path, readonly=True))])
    try:
        machine.primary.command(ata.IDENTIFY)
        w = words(machine.primary.read_data(512))
        assert w[60] | w[61] << 16 == (1 << 28) - 1
        assert w[100] | w[101] << 16 | w[102] << 32 == (1 << 28) + 1008
        assert (w[1], w[3], w[6]) == (16383, 16, 63)
    finally:
        machine.close()


def test_interrupt_acknowledged_by_status_not_alt_status(rig):
    ch = rig.primary
    ch.command(ata.IDENTIFY)
    assert ch.alt_status & DRQ and rig.irqs[14] == [1]
    ch.read_data(512)
    assert rig.irqs[14] == [1]
    ch.inb(7)  # the status register: reading it acknowledges the interrupt
    assert rig.irqs[14] == [1, 0]
    ch.control(0x0A)  # nIEN
    ch.command(ata.IDENTIFY)
    ch.read_data(512)
    assert rig.irqs[14] == [1, 0]


def test_absent_slave_and_empty_channel(rig):
    ch = rig.primary
    ch.select(0xB0)
    assert ch.status == 0 and ch.alt_status == 0 and ch.error == 0
    ch.outb(2, 0x55)
    ch.outb(3, 0xAA)
    assert (ch.inb(2), ch.inb(3), ch.inb(6)) == (0x55, 0xAA, 0xB0)  # it latches, as SeaBIOS probes
    ch.outb(7, ata.IDENTIFY)  # goes nowhere
    assert ch.status == 0 and rig.irqs[14] == []
    ch.select(0xA0)
    assert ch.status == DRDY | DSC and (ch.inb(2), ch.inb(3)) == (0x55, 0xAA)  # the master latched it too
    other = rig.secondary
    assert [other.inb(reg) for reg in range(1, 8)] == [0] * 7 and other.alt_status == 0


def test_srst_resets_both_units_and_reports_the_diagnostic(rig):
    ch = rig.primary
    ch.command(ata.READ, count=4, lba=7)
    ch.read_data(100)
    ch.control(0x0C)  # SRST | nIEN
    ch.control(0x08)
    assert ch.status == DRDY | DSC and ch.error == 0x01  # no DRQ left
    assert (ch.inb(2), ch.inb(3), ch.inb(4), ch.inb(5)) == (1, 1, 0, 0)  # the ATA signature
    assert ch.inb(6) == 0xA0  # the head bits cleared; the select stays (QEMU)
    assert ch.read_data(2) == b"\0\0"
    assert rig.irqs[14] == [1, 0]  # the READ's interrupt; SRST's is masked by nIEN


def test_port_widths(rig):
    ch = rig.primary
    assert ch.inb(0) == 0xFF  # a byte read of the data port
    assert rig.space.read_int(0x1F7, 2) == 0xFF00 | (DRDY | DSC)
    assert rig.space.read_int(0x1F2, 4) == 0xFFFFFFFF
    rig.space.write_int(0x1F2, 0x0302, 2)  # two byte registers
    assert (ch.inb(2), ch.inb(3)) == (2, 3)


# ------------------------------------------------------------------ reads
@pytest.mark.parametrize("width", [2, 4])
def test_read_lba28(rig, width):
    ch = rig.primary
    ch.command(ata.READ, count=3, lba=0x123)
    data = b""
    for _ in range(3):
        assert ch.status & DRQ
        data += ch.read_data(512, width)
    assert data == b"".join(pattern(lba) for lba in (0x123, 0x124, 0x125))
    assert ch.status == DRDY | DSC and ch.inb(3) == 0x26 and ch.inb(4) == 0x01  # the task file moved on
    assert rig.irqs[14] == [1, 0, 1, 0, 1, 0]  # one interrupt per sector


def test_read_lba48_with_hob_registers(rig):
    ch = rig.primary
    ch.command(ata.READ_EXT, count=0x0002, lba=0xFF0, lba48=True)
    assert ch.read_data(1024) == pattern(0xFF0) + pattern(0xFF1)
    ch.control(0x88)  # HOB: the previous (high-order) values
    assert (ch.inb(2), ch.inb(3)) == (0, 0)
    ch.control(0x08)
    assert (ch.inb(3), ch.inb(4)) == (0xF2, 0x0F)


def test_read_chs_and_initialize_device_parameters(rig):
    ch = rig.primary
    ch.command(ata.READ, count=1, chs=(1, 2, 3))  # (1 * 16 + 2) * 63 + 2
    assert ch.read_data(512) == pattern(1136)
    ch.select(0xA0 | 7)  # 8 heads
    ch.outb(2, 32)  # 32 sectors per track
    ch.outb(7, ata.INITIALIZE_PARAMETERS)
    assert ch.status == DRDY | DSC
    ch.command(ata.READ, count=1, chs=(1, 2, 3))  # (1 * 8 + 2) * 32 + 2
    assert ch.read_data(512) == pattern(322)
    ch.select(0xA0)
    ch.outb(2, 0)
    ch.outb(7, ata.INITIALIZE_PARAMETERS)
    assert ch.status & ERR and ch.error == ABRT


def test_read_multiple_transfers_blocks(rig):
    ch = rig.primary
    ch.outb(2, 4)
    ch.outb(7, ata.SET_MULTIPLE)
    assert ch.status == DRDY | DSC
    ch.command(ata.READ_MULTIPLE, count=6, lba=10)
    first = ch.read_data(4 * 512)
    second = ch.read_data(2 * 512)
    assert first + second == b"".join(pattern(lba) for lba in range(10, 16))
    assert rig.irqs[14] == [1, 0, 1]  # SET MULTIPLE's, then the first block's: the line stayed up after
    for bad in (3, 32):
        ch.outb(2, bad)
        ch.outb(7, ata.SET_MULTIPLE)
        assert ch.status & ERR and ch.error == ABRT
    ch.outb(2, 0)
    ch.outb(7, ata.SET_MULTIPLE)  # 0 disables READ/WRITE MULTIPLE
    ch.command(ata.READ_MULTIPLE, count=1)
    assert ch.status & ERR and ch.error == ABRT


def test_read_verify_and_native_max(rig):
    ch = rig.primary
    ch.command(ata.VERIFY, count=8, lba=SECTORS - 8)
    assert ch.status == DRDY | DSC and not ch.status & DRQ
    ch.command(ata.VERIFY, count=9, lba=SECTORS - 8)
    assert ch.error == IDNF
    ch.command(ata.READ_NATIVE_MAX)
    assert ch.inb(3) | ch.inb(4) << 8 | ch.inb(5) << 16 == SECTORS - 1


# ------------------------------------------------------------------ writes
@pytest.mark.parametrize("cmd, lba48", [(ata.WRITE, False), (ata.WRITE_EXT, True), (ata.WRITE_MULTIPLE, False),
                                        (ata.WRITE_MULTIPLE_EXT, True)])
def test_writes_reach_the_file(rig, image, cmd, lba48):
    ch = rig.primary
    before = image.read_bytes()
    data = bytes(random.Random(cmd).randrange(256) for _ in range(3 * 512))
    ch.command(cmd, count=3, lba=2000, lba48=lba48)
    ch.write_data(data)
    assert ch.status == DRDY | DSC
    after = image.read_bytes()
    assert after[2000 * 512:2003 * 512] == data
    assert after[:2000 * 512] == before[:2000 * 512] and after[2003 * 512:] == before[2003 * 512:]


def test_write_chs_32bit_then_flush(rig, image):
    ch = rig.primary
    ch.command(ata.WRITE, count=1, chs=(0, 0, 1))
    ch.write_data(b"\xAB" * 512, 4)
    ch.outb(7, ata.FLUSH_CACHE)
    assert ch.status == DRDY | DSC
    ch.outb(7, ata.FLUSH_CACHE_EXT)
    assert ch.status == DRDY | DSC
    assert image.read_bytes()[:512] == b"\xAB" * 512


def test_write_cache_off_and_on(rig):
    ch = rig.primary
    for feature, enabled in ((0x82, 0), (0x02, 1 << 5)):
        ch.command(ata.SET_FEATURES, feature=feature)
        assert ch.status == DRDY | DSC
        ch.command(ata.IDENTIFY)
        assert words(ch.read_data(512))[85] & 1 << 5 == enabled


def test_read_only_image_refuses_writes(tmp_path):
    path = make_image(tmp_path / "ro.img")
    digest = sha(path)
    machine = Rig([AtaDisk(DiskImage(path, readonly=True))])
    try:
        ch = machine.primary
        ch.command(ata.WRITE, count=1, lba=5)
        assert ch.status & ERR and ch.error == ABRT and not ch.status & DRQ
        ch.command(ata.READ, count=1, lba=5)
        assert ch.read_data(512) == pattern(5)
    finally:
        machine.close()
    assert sha(path) == digest


# ------------------------------------------------------------------ hostile guests
def test_unknown_and_unsupported_commands_abort(rig, image):
    digest = sha(image)
    ch = rig.primary
    for opcode in range(256):
        if opcode in ata.COMMANDS:
            continue
        ch.command(opcode)
        assert (ch.status, ch.error) == (DRDY | ERR, ABRT), hex(opcode)
    for opcode in (0xC8, 0x25, 0xCA, 0x35, 0xB0, 0x06, 0x08, 0xA0, 0xA1):  # DMA, SMART, TRIM, ATAPI
        assert opcode not in ata.COMMANDS
    assert sha(image) == digest


def test_addresses_past_the_end_report_idnf(rig, image):
    digest = sha(image)
    ch = rig.primary
    for cmd, kwargs in ((ata.READ, dict(lba=SECTORS)), (ata.READ_EXT, dict(lba=1 << 40, lba48=True)),
                        (ata.READ, dict(chs=(100, 0, 1))), (ata.READ, dict(chs=(0, 0, 0)))):
        ch.command(cmd, count=1, **kwargs)
        assert (ch.status, ch.error) == (DRDY | ERR, IDNF), (cmd, kwargs)
        assert ch.read_data(2) == b"\0\0"
    ch.command(ata.WRITE, count=2, lba=SECTORS - 1)  # the first sector fits, the second does not
    ch.write_data(b"\x11" * 512)
    assert ch.status & DRQ
    ch.write_data(b"\x22" * 512)
    assert (ch.status, ch.error) == (DRDY | ERR, IDNF)
    assert image.read_bytes()[-512:] == b"\x11" * 512
    image.write_bytes(image.read_bytes()[:-512] + pattern(SECTORS - 1))
    assert sha(image) == digest
    ch.command(ata.READ, count=2, lba=SECTORS - 1)  # the first sector comes, then the error
    assert ch.read_data(512) == pattern(SECTORS - 1)
    assert (ch.status, ch.error) == (DRDY | ERR, IDNF)


def test_interrupted_transfers_leave_the_image_alone(rig, image):
    digest = sha(image)
    ch = rig.primary
    ch.command(ata.WRITE, count=1, lba=9)
    ch.write_data(b"\x5A" * 300)
    ch.control(0x0C)  # SRST mid-sector
    ch.control(0x08)
    assert ch.status == DRDY | DSC and ch.read_data(2) == b"\0\0"
    ch.command(ata.WRITE, count=1, lba=9)
    ch.write_data(b"\x5A" * 300)
    ch.outb(7, ata.READ)  # a new command while DRQ is up is ignored, as are task-file writes
    ch.outb(3, 0x77)
    assert ch.status & DRQ and ch.inb(3) == 9
    ch.control(0x0C)
    ch.control(0x08)
    assert sha(image) == digest
    ch.command(ata.READ, count=1, lba=9)
    assert ch.read_data(512) == pattern(9)


def test_data_port_with_nothing_pending(rig, image):
    digest = sha(image)
    ch = rig.primary
    assert ch.read_data(64) == bytes(64) and ch.read_data(64, 4) == bytes(64)
    ch.write_data(b"\xEE" * 64)
    ch.command(ata.IDENTIFY)
    ch.write_data(b"\xEE" * 64)  # writes during a read transfer are dropped
    assert words(ch.read_data(512))[0] == 0x0040
    ch.command(ata.WRITE, count=1, lba=3)
    assert ch.read_data(8) == bytes(8)  # reads during a write transfer give 0 and do not advance
    ch.control(0x0C)
    ch.control(0x08)
    assert sha(image) == digest


def test_fuzzed_registers_never_raise_nor_write(rig, image):
    """Random bytes and words at every port, write commands left out: the image never changes."""
    digest = sha(image)
    writes = {c for c, (handler, _) in ata.COMMANDS.items() if handler is ata.AtaDevice.cmd_write}
    rng = random.Random(1234)
    io = rig.space
    for _ in range(20000):
        port = rng.choice((0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6))
        if rng.random() < 0.5:
            io.read_int(port, rng.choice((1, 2, 4)) if port == 0x1F0 else 1)
            continue
        value = rng.randrange(256)
        if port == 0x1F7 and value in writes:
            continue
        if port == 0x1F0:
            io.write_int(port, rng.randrange(1 << 16), 2)
        else:
            io.write_int(port, value, 1)
    assert sha(image) == digest
    rig.primary.control(0x0C)
    rig.primary.control(0x08)
    rig.primary.command(ata.READ, count=1, lba=1)
    assert rig.primary.read_data(512) == pattern(1)


def test_host_io_errors_become_abrt(rig, image, monkeypatch):
    disk = rig.ide.disks()[0]

    def failing(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(disk.image, "read", failing)
    rig.primary.command(ata.READ, count=1, lba=1)
    assert (rig.primary.status, rig.primary.error) == (DRDY | ERR, ABRT)


# ------------------------------------------------------------------ images, geometry, CMOS
def test_disk_image_rules(tmp_path):
    """As QEMU 7.2 takes them: a size not a multiple of 512 is rounded up (the tail reads as zeros,
    QEMU accepts a 1000-byte or empty -hda); a file that does not open is QEMU's one line."""
    odd = tmp_path / "odd.img"
    odd.write_bytes(bytes(range(250)) * 4)
    with DiskImage(odd) as image:
        assert image.sectors == 2
        assert image.read(1, 1) == odd.read_bytes()[512:] + bytes(24)
    (tmp_path / "empty.img").write_bytes(b"")
    with DiskImage(tmp_path / "empty.img") as image:
        assert image.sectors == 0 and guess_geometry(image)[:3] == (2, 16, 63)
    with pytest.raises(DiskImageError, match=r"^Could not open '.*missing.img': No such file or directory$"):
        DiskImage(tmp_path / "missing.img")
    with pytest.raises(DiskImageError, match=r"format 'qcow2' \(kvmshim reads raw images only\)"):
        DiskImage(odd, format="qcow2")
    image = DiskImage(make_image(tmp_path / "ok.img", 8))
    image.close()
    image.close()
    with pytest.raises(ValueError, match="geometry"):
        AtaDisk(DiskImage(tmp_path / "ok.img"), geometry=(10, 17, 63))


#: First bytes QEMU 7.2 probes as another format (each checked with qemu-system-x86_64 -hda), and
#: near misses it probes as raw.
FORMAT_HEADERS = [
    (b"QFI\xfb\0\0\0\1", "qcow"), (b"QFI\xfb\0\0\0\3", "qcow2"), (b"QED\0", "qed"),
    (bytes(0x40) + b"\x7f\x10\xda\xbe", "vdi"), (b"vhdxfile", "vhdx"), (b"conectix", "vpc"), (b"KDMV", "vmdk"),
    (b"COWD", "vmdk"), (b"version=1\n", "vmdk"), (b"#x\n#y\n   \nversion=3\r\n", "vmdk"),
    (b"  \r\nversion=2\r\n", "vmdk"), (b"WithoutFreeSpace\2\0\0\0", "parallels"),
    (b"WithouFreSpacExt\2\0\0\0", "parallels"), (b"LUKS\xba\xbe\0\1", "luks"),
    (b"Bochs Virtual HD Image".ljust(32, b"\0") + b"Redolog".ljust(16, b"\0") + b"Growing".ljust(16, b"\0")
     + b"\0\0\2\0", "bochs"),
    (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n", "cloop"),
    (b"QFI\xfb\0\0\0\0", "raw"), (b"\nversion=1\n", "raw"), (b"version=4\n", "raw"), (b"LUKS\xba\xbe\0\2", "raw"),
    (b"\xeb\x3c\x90" + bytes(507) + b"\x55\xaa", "raw"), (b"", "raw"),
]


@pytest.mark.parametrize("head, expected", FORMAT_HEADERS)
def test_probe_format_as_qemu(head, expected):
    assert ata.probe_format(head) == expected
    assert ata.probe_format(head, "image.dmg") == (expected if expected != "raw" else "dmg")


def test_an_image_without_a_format_is_probed(tmp_path):
    """-hda x.qcow2 is refused (used raw, the first write would corrupt it); a raw one is probed."""
    qcow2 = tmp_path / "x.qcow2"
    qcow2.write_bytes(b"QFI\xfb\0\0\0\3".ljust(4096, b"\0"))
    with pytest.raises(DiskImageError) as caught:
        DiskImage(qcow2, format=None)
    assert str(caught.value) == f"disk image '{qcow2}' is a qcow2 image; kvmshim reads raw images only"
    with DiskImage(qcow2) as image:  # format=raw: the user's word, as in QEMU
        assert not image.probed
    with DiskImage(make_image(tmp_path / "raw.img", 8), format=None) as image:
        assert image.probed


@pytest.mark.parametrize("fmt", [None, "raw"])
def test_a_probed_raw_image_refuses_a_sector_0_of_another_format(tmp_path, fmt):
    """QEMU's raw driver after probing: a write to sector 0 that would probe as another format
    gets EPERM, which the guest sees as ABRT; format=raw lifts it."""
    path = make_image(tmp_path / "raw.img")
    digest = sha(path)
    machine = Rig([AtaDisk(DiskImage(path, format=fmt))])
    try:
        ch = machine.primary
        qcow2 = b"QFI\xfb\0\0\0\3".ljust(512, b"\0")
        ch.command(ata.WRITE, count=2, lba=0)
        ch.write_data(qcow2 + pattern(7))
        if fmt is None:
            assert (ch.status & ERR, ch.error) == (ERR, ABRT) and sha(path) == digest
        else:
            assert ch.status == DRDY | DSC and path.read_bytes()[:1024] == qcow2 + pattern(7)
        ch.command(ata.WRITE, count=1, lba=0)
        ch.write_data(b"\xAB" * 512)  # still raw: allowed
        assert ch.status == DRDY | DSC and path.read_bytes()[:512] == b"\xAB" * 512
    finally:
        machine.close()


def _open_fds_on(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            if fd.readlink() == path:
                found.append(fd.name)
        except OSError:
            pass
    return found


def test_a_bad_drive_closes_the_images_opened_before_it(tmp_path):
    """-hda good -hdb missing: one DiskImageError, and the first image's fd is closed (the board
    stopped half-way); a duplicate fw_cfg file after the disks does the same."""
    good = make_image(tmp_path / "good.img", 8)
    config = seabios_config(drives=(Drive(good, 0, "raw"), Drive(tmp_path / "missing.img", 1, "raw")))
    with pytest.raises(DiskImageError, match="Could not open"):
        PcMachine(config)
    assert _open_fds_on(good) == []
    config = seabios_config(drives=(Drive(good, 0, "raw"),), fw_cfg=(FwCfgFile("etc/e820", b""),))
    with pytest.raises(KvmshimError, match=r"^duplicate fw_cfg file name: etc/e820$"):
        PcMachine(config)
    assert _open_fds_on(good) == []


def _mbr(end_head: int, end_sector: int, sectors: int = 1) -> bytes:
    entry = bytes((0x80, 1, 1, 0, 0x83, end_head, end_sector, 0)) + struct.pack("<II", 63, sectors)
    return bytes(0x1BE) + entry + bytes(48) + b"\x55\xaa"


@pytest.mark.parametrize("mbr, size, expected", [
    (b"", 16384, (16, 16, 63, TRANSLATION_NONE)),  # no MBR: 16 heads, 63 sectors for the size
    (_mbr(15, 63), 16384, (16, 16, 63, TRANSLATION_NONE)),
    (_mbr(7, 32), 16384, (64, 8, 32, TRANSLATION_NONE)),  # the partition's geometry
    (_mbr(254, 63), 16384, (16, 16, 63, TRANSLATION_LARGE)),  # a BIOS LBA translation was in use
    (_mbr(254, 63), 4 << 21, (8322, 16, 63, TRANSLATION_LBA)),
    (b"", 2 << 21, (4161, 16, 63, TRANSLATION_LBA)),  # more than 1024 cylinders
])
def test_geometry_guess(tmp_path, mbr, size, expected):
    path = tmp_path / "g.img"
    with path.open("wb") as f:
        f.write(mbr)
        f.truncate(size * 512)
    with DiskImage(path, readonly=True) as image:
        assert guess_geometry(image) == expected


def test_cmos_disk_bytes_as_pc_cmos_init_late(image):
    cmos = Cmos(128 << 20, 0)
    with DiskImage(image, readonly=True) as one:
        disk = AtaDisk(one)
        cmos.set_disks([disk, None, disk])
    assert cmos.cmos[0x12] == 0xF0 and cmos.cmos[0x19] == 47 and cmos.cmos[0x1A] == 0
    assert list(cmos.cmos[0x1B:0x24]) == [4, 0, 16, 0xFF, 0xFF, 0xC8, 4, 0, 63]
    assert cmos.cmos[0x39] == 0  # no translation for either disk


# ------------------------------------------------------------------ SeaBIOS int 13h on KVM
BOOT_SECTOR = r"""
bits 16
org 0x7c00
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    mov [drive], dl
    mov si, hello
    call print
    push es                     ; the same words straight into the VGA text buffer, white on blue
    mov ax, 0xb800
    mov es, ax
    xor di, di
    mov si, video
.video:
    lodsb
    test al, al
    jz .shown
    mov ah, 0x1f
    stosw
    jmp .video
.shown:
    pop es
    mov ah, 0x41                ; EDD present?
    mov bx, 0x55aa
    mov dl, [drive]
    int 0x13
    jc fail
    cmp bx, 0xaa55
    jne fail
    mov si, dap_read            ; LBA 1, 2 sectors -> 0x8000
    mov ah, 0x42
    mov dl, [drive]
    int 0x13
    jc fail
    mov si, 0x8000
    call print
    mov si, 0x8200
    call print
    mov ax, 0x0201              ; CHS read: cylinder 0, head 0, sector 4 = LBA 3
    mov cx, 0x0004
    xor dh, dh
    mov dl, [drive]
    mov bx, 0x9000
    int 0x13
    jc fail
    mov si, 0x9000
    call print
    mov si, dap_write           ; the first data sector, as read -> LBA 5
    mov ax, 0x4300
    mov dl, [drive]
    int 0x13
    jc fail
    mov si, done
    call print
    mov cx, 3                   ; three timer ticks: sercon sends its last character lazily
.tick:
    hlt
    loop .tick
    mov al, 0x21
    out 0xf4, al                ; isa-debug-exit: status 0x43
    hlt
fail:
    mov si, failed
    call print
    mov al, 0x7f
    out 0xf4, al
    hlt
print:
    lodsb
    test al, al
    jz .out
    mov ah, 0x0e
    mov bx, 7
    int 0x10
    jmp print
.out:
    ret
hello:  db "boot sector says hello", 13, 10, 0
video:  db "on the screen too", 0
done:   db "int 13h done", 13, 10, 0
failed: db "int 13h FAILED", 13, 10, 0
drive:  db 0
align 4
dap_read:  db 16, 0
           dw 2, 0x8000, 0
           dq 1
dap_write: db 16, 0
           dw 1, 0x8000, 0
           dq 5
times 510 - ($ - $$) db 0
dw 0xaa55
"""


@pytest.fixture(scope="module")
def boot_disk(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bootsector")
    (work / "boot.asm").write_text(BOOT_SECTOR)
    subprocess.run(["nasm", "-f", "bin", "-o", str(work / "boot.bin"), str(work / "boot.asm")], check=True)
    sectors = [b"first data sector\r\n".ljust(512, b"\0"), b"second data sector\r\n".ljust(512, b"\0"),
               b"CHS sector\r\n".ljust(512, b"\0")]
    disk = work / "disk.img"
    disk.write_bytes((work / "boot.bin").read_bytes() + b"".join(sectors) + bytes(512 * (2048 - 4)))
    return disk


@pytest.mark.kvm
def test_seabios_int13_reads_and_writes_our_disk(boot_disk):
    """SeaBIOS finds the disk (bootorder), boots its sector, serves int 13h reads (EDD and CHS) and a
    write from our IDE and mirrors int 10h on COM1 (etc/sercon-port); the sector also writes to the
    VGA text buffer, which the screen shows; the guest ends via isa-debug-exit."""
    original = boot_disk.read_bytes()
    config = seabios_config(drives=(Drive(boot_disk, 0, "raw"),), boot=Boot("c"), vga="std",
                            fw_cfg=(FwCfgFile("etc/sercon-port", sercon_port_file(0x3F8)),),
                            devices=seabios_config().devices + (IsaDebugExit(iobase=0xF4, iosize=4),))
    with PcMachine(config) as machine:
        machine.boot(timeout=240)
        screen = machine.board.vga.screen()
    output = bytes(machine.board.serials[0].output)
    for line in (b"boot sector says hello", b"first data sector", b"second data sector", b"CHS sector",
                 b"int 13h done"):
        assert line in output, output[-400:]
    assert machine.exit_status == 0x21 << 1 | 1
    assert screen.lines()[0].startswith("on the screen too") and screen.attrs[0] == 0x1F
    assert b"ata0-0: QEMU HARDDISK ATA-7 Hard-Disk (1 MiBytes)" in machine.log
    assert b"Booting from Hard Disk" in machine.log
    after = boot_disk.read_bytes()
    assert after[5 * 512:6 * 512] == original[512:1024]  # sector 1, read and written back to LBA 5
    assert after[:5 * 512] == original[:5 * 512] and after[6 * 512:] == original[6 * 512:]


PROBE_GUARD_SECTOR = r"""
bits 16
org 0x7c00
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    mov [drive], dl
    mov si, dap_read            ; LBA 1 (a qcow2 header) -> 0x8000
    mov ah, 0x42
    int 0x13
    jc fail
    mov si, dap_qcow2           ; ... written to LBA 0: must fail
    mov ax, 0x4300
    mov dl, [drive]
    int 0x13
    jnc fail
    mov si, dap_self            ; this raw sector written to LBA 0: must work
    mov ax, 0x4300
    mov dl, [drive]
    int 0x13
    jc fail
    mov al, 0x21
    out 0xf4, al                ; isa-debug-exit: status 0x43
    hlt
fail:
    mov al, 0x7f
    out 0xf4, al
    hlt
drive: db 0
align 4
dap_read:  db 16, 0
           dw 1, 0x8000, 0
           dq 1
dap_qcow2: db 16, 0
           dw 1, 0x8000, 0
           dq 0
dap_self:  db 16, 0
           dw 1, 0x7c00, 0
           dq 0
times 510 - ($ - $$) db 0
dw 0xaa55
"""


@pytest.mark.kvm
def test_a_guest_cannot_turn_a_probed_raw_disk_into_qcow2(tmp_path):
    """-hda without format= under SeaBIOS: QEMU's warning, then int 13h's write of a qcow2 header to
    sector 0 fails (ATA ABRT) and the image keeps its bytes, while a raw sector 0 is written."""
    (tmp_path / "boot.asm").write_text(PROBE_GUARD_SECTOR)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "boot.bin"), str(tmp_path / "boot.asm")], check=True)
    disk = tmp_path / "disk.img"
    boot = (tmp_path / "boot.bin").read_bytes()
    disk.write_bytes(boot + b"QFI\xfb\0\0\0\3".ljust(512, b"\0") + bytes(512 * 2046))
    original = disk.read_bytes()
    config = seabios_config(drives=(Drive(disk, 0, None),), boot=Boot("c"),
                            devices=seabios_config().devices + (IsaDebugExit(iobase=0xF4, iosize=4),))
    with PcMachine(config) as machine:
        assert machine.board.warnings == [ata.probed_raw_warning(disk)]
        machine.boot(timeout=240)
    assert machine.exit_status == 0x21 << 1 | 1, machine.log[-400:]
    after = disk.read_bytes()
    assert after[512:] == original[512:]
    # sector 0 is the guest's own copy: its saved drive (0x80), and the failed DAP's count set to 0
    assert [after[i] for i in range(512) if after[i] != original[i]] == [0x80, 0]


# ------------------------------------------------------------------ image locking, as QEMU's
LOCKED = 'Failed to get "write" lock\nIs another process using the image'


def locked(path: Path) -> bool:
    """Whether any process holds a lock on the file, read from /proc/locks (taking none, so that
    the process being waited for never finds the image locked by the waiter)."""
    inode = f":{os.stat(path).st_ino}"
    return any(token.endswith(inode) for line in Path("/proc/locks").read_text().splitlines() for token in line.split())


def test_a_second_writer_or_reader_of_a_locked_image_is_refused(tmp_path):
    image = make_image(tmp_path / "disk.img")
    with DiskImage(image):
        with pytest.raises(ImageLockError, match=LOCKED):
            DiskImage(image)
        with pytest.raises(ImageLockError, match='Failed to get shared "write" lock'):
            DiskImage(image, readonly=True)  # nobody shares writes, as QEMU's IDE disks
    with DiskImage(image, readonly=True), pytest.raises(ImageLockError, match=LOCKED):
        DiskImage(image)
    DiskImage(image).close()  # every lock went with its image


def test_kvmshim_and_qemu_refuse_each_others_image(tmp_path):
    """The same lock bytes as QEMU 7.2, both ways: neither writes an image the other has open."""
    image = make_image(tmp_path / "disk.img")
    qemu = ["qemu-system-x86_64", "-accel", "kvm", "-S", "-display", "none", "-nodefaults",
            "-drive", f"file={image},format=raw,if=ide"]
    with DiskImage(image):
        refused = subprocess.run([*qemu, "-no-shutdown"], capture_output=True, timeout=60)
    assert refused.returncode == 1 and f'{LOCKED} [{image}]?' in refused.stderr.decode()
    running = subprocess.Popen(qemu, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not locked(image):  # until QEMU has opened and locked its drive
            assert running.poll() is None and time.monotonic() < deadline, "QEMU never locked the image"
            time.sleep(0.05)
        with pytest.raises(ImageLockError, match=LOCKED):
            DiskImage(image)
    finally:
        running.kill()
        running.wait(30)
    DiskImage(image).close()


def test_an_inactive_image_holds_no_lock_and_takes_no_write(tmp_path):
    """A migration's destination (QEMU's -incoming): the source keeps the image until it lets go."""
    image = make_image(tmp_path / "disk.img")
    digest = sha(image)
    with DiskImage(image) as source, DiskImage(image, active=False) as destination:
        with pytest.raises(PermissionError, match="inactive"):
            destination.write(3, bytes(ata.SECTOR))
        with pytest.raises(ImageLockError):
            destination.activate()
        source.inactivate()
        destination.activate()
        with pytest.raises(PermissionError, match="inactive"):
            source.write(3, bytes(ata.SECTOR))
    assert sha(image) == digest
