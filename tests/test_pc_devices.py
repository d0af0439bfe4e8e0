"""The pc machine's pieces on the pure memory core (no KVM): map, PAM, PCI, PIIX4 PM, fw_cfg, CMOS, debugcon."""
from __future__ import annotations

import argparse
import struct

import pytest

import memapi
from kvmshim.pc.board import PcBoard
from kvmshim.pc.cli import bios_file
from kvmshim.pc.machine import seabios_config
from kvmshim.pc.memmap import E820_RAM, E820_RESERVED, split_ram
from memapi import AddressSpace, MemoryRegion

MiB, GiB = 1 << 20, 1 << 30
BIOS = bytes(range(256)) * 1024  # 256 KiB


class Pc:
    """PcMachine's board on address spaces of the default memory system, with no KVM."""

    def __init__(self, ram_size: int = 128 * MiB) -> None:
        self.system = MemoryRegion.container("system", memapi.UINT64_MAX)
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.memory = AddressSpace(self.system, "memory")
        self.io_space = AddressSpace(self.io, "I/O")
        self.resets = 0
        board = PcBoard(self.system, self.io, seabios_config(ram_size), BIOS, set_irq=lambda line, level: None,
                        request_reset=self.reset)
        self.map, self.i440fx, self.pm, self.fw_cfg, self.debugcon = (board.map, board.i440fx, board.pm,
                                                                      board.fw_cfg, board.debugcons[0])

    def reset(self) -> None:
        self.resets += 1

    def flat(self, lo: int = 0, hi: int = 1 << 64) -> list[tuple[int, int, str, int, bool]]:
        """(start, end inclusive, region, offset, readonly) of the memory FlatView within [lo, hi)."""
        return [(r.start, r.end - 1, r.mr.name, r.offset_in_region, r.readonly)
                for r in self.memory.current_map if lo <= r.start < hi]

    def config_read(self, devfn: int, offset: int, size: int = 4) -> int:
        self.io_space.write_int(0xCF8, 1 << 31 | devfn << 8 | offset & 0xFC, 4)
        return self.io_space.read_int(0xCFC + (offset & 3), size)

    def config_write(self, devfn: int, offset: int, value: int, size: int) -> None:
        self.io_space.write_int(0xCF8, 1 << 31 | devfn << 8 | offset & 0xFC, 4)
        self.io_space.write_int(0xCFC + (offset & 3), value, size)

    def cmos_read(self, index: int) -> int:
        self.io_space.write_int(0x70, index, 1)
        return self.io_space.read_int(0x71, 1)

    def close(self) -> None:
        self.memory.destroy()
        self.io_space.destroy()
        self.map.close()


@pytest.fixture
def pc():
    machine = Pc()
    yield machine
    machine.close()


# ------------------------------------------------------------------ memory map and PAM
@pytest.mark.parametrize("ram, split", [(128 * MiB, (128 * MiB, 0)), (3 * GiB + GiB // 4, (3 * GiB + GiB // 4, 0)),
                                        (3 * GiB + GiB // 2, (3 * GiB, GiB // 2)), (4 * GiB, (3 * GiB, GiB))])
def test_ram_split_below_and_above_4g(ram, split):
    assert split_ram(ram) == split


def test_ram_above_4g_is_an_alias_at_4g():
    machine = Pc(4 * GiB)
    try:
        assert machine.flat(1 << 32) == [(1 << 32, (5 << 30) - 1, "pc.ram", 3 * GiB, False)]
        assert machine.map.e820() == [(0, 3 * GiB, E820_RAM), (1 << 32, GiB, E820_RAM)]
        assert [machine.cmos_read(i) for i in (0x5B, 0x5C, 0x5D)] == [0x00, 0x40, 0x00]  # 1 GiB in 64 KiB units
    finally:
        machine.close()


def test_before_post_pam_shows_pci(pc):
    assert pc.flat() == [
        (0, 0xBFFFF, "pc.ram", 0, False),
        (0xC0000, 0xDFFFF, "pc.rom", 0, True),
        (0xE0000, 0xFFFFF, "pc.bios", 0x20000, True),
        (0x100000, 128 * MiB - 1, "pc.ram", 0x100000, False),
        (0xFFFC0000, 0xFFFFFFFF, "pc.bios", 0, True),
    ]


def test_pam_attributes_select_one_alias_per_segment(pc):
    pc.config_write(0, 0x59, 0x10, 1)  # 0xf0000: read-only RAM
    pc.config_write(0, 0x5A, 0x23, 1)  # 0xc0000: RAM; 0xc4000: write-only (QEMU maps RAM)
    assert pc.flat(0, 0x100000) == [
        (0, 0xC7FFF, "pc.ram", 0, False),  # merged with the RAM below

        (0xC8000, 0xDFFFF, "pc.rom", 0x8000, True),
        (0xE0000, 0xEFFFF, "pc.bios", 0x20000, True),
        (0xF0000, 0xFFFFF, "pc.ram", 0xF0000, True),
    ]
    enabled = [[a.name for a in segment.aliases if a.enabled] for segment in pc.i440fx.pam]
    assert enabled[:3] == [["pam-rom"], ["pam-ram"], ["pam-pci"]]
    assert pc.i440fx.pam[2].aliases[2].alias_target is pc.map.ram
    assert all(len(names) == 1 for names in enabled)


def test_pam_dword_write_updates_every_segment_it_covers(pc):
    pc.config_write(0, 0x5C, 0x33333333, 4)  # PAM3..PAM6: segments 0xd0000-0xeffff become RAM
    assert pc.flat(0xC0000, 0x100000)[1:] == [(0xD0000, 0xEFFFF, "pc.ram", 0xD0000, False),
                                             (0xF0000, 0xFFFFF, "pc.bios", 0x30000, True)]
    assert pc.config_read(0, 0x5C) == 0x33333333


def test_smram_open_disables_the_vga_window(pc):
    assert pc.i440fx.smram_region.enabled and pc.config_read(0, 0x72, 1) == 0x02
    pc.config_write(0, 0x72, 0x4A, 1)  # D_OPEN | G_SMRAME | C_BASE_SEG
    assert not pc.i440fx.smram_region.enabled


# ------------------------------------------------------------------ PCI configuration mechanism #1
def test_config_space_of_the_three_functions(pc):
    assert pc.config_read(0, 0) == 0x12378086
    assert pc.config_read(0x08, 0) == 0x70008086 and pc.config_read(0x08, 0x0E, 1) == 0x80  # multifunction
    assert pc.config_read(0x0B, 0) == 0x71138086
    assert pc.config_read(0, 0x2C) == 0x11001AF4  # the subsystem SeaBIOS checks to detect QEMU


def test_absent_function_disabled_latch_and_readonly_ids(pc):
    assert pc.config_read(0x10, 0) == 0xFFFFFFFF
    pc.io_space.write_int(0xCF8, 0, 4)
    assert pc.io_space.read_int(0xCFC, 4) == 0xFFFFFFFF
    pc.config_write(0, 0, 0xFFFF, 2)
    assert pc.config_read(0, 0, 2) == 0x8086
    pc.io_space.write_int(0xCF8, 0x80000008, 4)
    pc.io_space.write_int(0xCF8, 0x12, 1)  # 0xcf8 latches whole dwords only
    assert pc.io_space.read_int(0xCF8, 4) == 0x80000008


def test_reset_control_sits_over_the_latch(pc):
    pc.io_space.write_int(0xCF9, 0x02, 1)
    assert pc.io_space.read_int(0xCF9, 1) == 0x02 and pc.resets == 0
    pc.io_space.write_int(0xCF9, 0x06, 1)
    assert pc.resets == 1


# ------------------------------------------------------------------ PIIX4 PM
def test_pmbase_and_pmregmisc_map_the_acpi_registers(pc):
    assert not pc.pm.region.enabled
    pc.config_write(0x0B, 0x40, 0xB001, 4)
    pc.config_write(0x0B, 0x80, 0x01, 1)
    names = {r.start: r.mr.name for r in pc.io_space.current_map if 0xB000 <= r.start < 0xB040}
    assert names == {0xB000: "acpi-evt", 0xB004: "acpi-cnt", 0xB006: "io", 0xB008: "acpi-tmr", 0xB00C: "io"}
    first = pc.io_space.read_int(0xB008, 4)
    second = pc.io_space.read_int(0xB008, 4)
    assert first < 1 << 24 and second != first


# ------------------------------------------------------------------ fw_cfg
def _fw_cfg_read(pc: Pc, key: int, size: int) -> bytes:
    pc.io_space.write_int(0x510, key, 2)
    return bytes(pc.io_space.read_int(0x511, 1) for _ in range(size))


def test_fw_cfg_signature_id_and_ram_size(pc):
    assert _fw_cfg_read(pc, 0x00, 4) == b"QEMU"
    assert _fw_cfg_read(pc, 0x01, 4) == struct.pack("<I", 1)  # no DMA interface
    assert _fw_cfg_read(pc, 0x03, 8) == struct.pack("<Q", 128 * MiB)


def test_fw_cfg_file_directory_and_e820(pc):
    count, size, select, _, name = struct.unpack(">IIHH56s", _fw_cfg_read(pc, 0x19, 68))
    assert (count, size, select, name.rstrip(b"\0")) == (1, 40, 0x20, b"etc/e820")
    assert _fw_cfg_read(pc, select, 40) == (struct.pack("<QQI", 0, 128 * MiB, E820_RAM)
                                            + struct.pack("<QQI", 0xFEFFC000, 0x4000, E820_RESERVED))


def test_fw_cfg_unknown_item_reads_zeros(pc):
    assert _fw_cfg_read(pc, 0x0D, 8) == bytes(8)  # NUMA: not there
    assert _fw_cfg_read(pc, 0x00, 6) == b"QEMU\0\0"  # past the end


# ------------------------------------------------------------------ CMOS, debug console, --bios
def test_cmos_memory_size_bytes(pc):
    assert [pc.cmos_read(i) for i in (0x15, 0x16)] == [0x80, 0x02]  # 640 KiB
    assert [pc.cmos_read(i) for i in (0x17, 0x18, 0x30, 0x31)] == [0xFF] * 4  # capped at 0xffff KiB
    assert [pc.cmos_read(i) for i in (0x34, 0x35)] == [0x00, 0x07]  # 112 MiB in 64 KiB units
    assert pc.cmos_read(0x5F) == 0  # one CPU


def test_cmos_registers(pc):
    assert pc.cmos_read(0x80 | 0x0A) == 0x26  # the NMI-disable bit is not part of the index
    assert pc.cmos_read(0x0D) == 0x80
    seconds = pc.cmos_read(0x00)
    assert seconds >> 4 < 6 and seconds & 0xF < 10  # BCD
    pc.io_space.write_int(0x71, 0x11, 1)  # the clock is not set by writes
    assert pc.io_space.read_int(0x70, 1) == 0xFF


def test_debugcon_reads_back_e9_and_collects_the_log(pc):
    assert pc.io_space.read_int(0x402, 1) == 0xE9
    for byte in b"hi\n":
        pc.io_space.write_int(0x402, byte, 1)
    assert pc.debugcon.output == b"hi\n"


def test_bios_option_wants_whole_64k_blocks(tmp_path):
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(bytes(128 << 10))
    bad.write_bytes(bytes(1000))
    assert bios_file(str(good)) == good
    for path in (bad, tmp_path / "missing.bin"):
        with pytest.raises(argparse.ArgumentTypeError):
            bios_file(str(path))
