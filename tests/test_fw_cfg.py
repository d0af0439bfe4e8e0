"""fw_cfg's named files for booting (bootorder, etc/sercon-port) and the CMOS boot bytes, read the
way SeaBIOS reads them: selector write at 0x510, data bytes at 0x511, the big-endian file directory."""
from __future__ import annotations

import argparse
import re
import struct

import pytest

import memapi
from kvmshim.pc.board import PcBoard
from kvmshim.pc.cli import add_options, boot
from kvmshim.pc.cmos import Cmos
from kvmshim.pc.fw_cfg import FwCfg, FwCfgError, bootorder_file, sercon_port_file
from kvmshim.pc.ide import PiixIde
from kvmshim.pc.machine import PcMachine, seabios_config
from kvmshim.qemu_config import Boot, Drive, FwCfgFile
from memapi import AddressSpace, MemoryRegion

MiB = 1 << 20


@pytest.fixture
def fw_cfg():
    io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    space = AddressSpace(io, "I/O")
    device = FwCfg(128 * MiB, cpus=2)
    device.map(io)
    device.space = space
    yield device
    space.destroy()


def read_item(fw_cfg: FwCfg, key: int, size: int) -> bytes:
    fw_cfg.space.write_int(0x510, key, 2)
    return bytes(fw_cfg.space.read_int(0x511, 1) for _ in range(size))


def directory(fw_cfg: FwCfg) -> dict[str, tuple[int, int]]:
    """name -> (select, size), as qemu_cfg_init reads the directory."""
    count = struct.unpack(">I", read_item(fw_cfg, 0x19, 4))[0]
    raw = read_item(fw_cfg, 0x19, 4 + 64 * count)[4:]
    entries = {}
    for i in range(count):
        size, select, _, name = struct.unpack(">IHH56s", raw[64 * i:64 * i + 64])
        entries[name.rstrip(b"\0").decode()] = (select, size)
    return entries


def read_file(fw_cfg: FwCfg, name: str) -> bytes:
    select, size = directory(fw_cfg)[name]
    return read_item(fw_cfg, select, size)


def glob_prefix(glob: str, path: str) -> bool:
    """SeaBIOS's glob_prefix (boot.c): '*' matches up to the next '/' or the glob's next character."""
    g = s = 0
    while True:
        if g == len(glob) and (s == len(path) or path[s] == "/"):
            return True
        if g < len(glob) and glob[g] == "*":
            if s == len(path) or path[s] == "/" or (g + 1 < len(glob) and path[s] == glob[g + 1]):
                g += 1
            else:
                s += 1
            continue
        if g == len(glob) or s == len(path) or glob[g] != path[s]:
            return False
        g, s = g + 1, s + 1


def test_cpu_count_and_ram_size(fw_cfg):
    assert read_item(fw_cfg, 0x05, 2) == struct.pack("<H", 2) == read_item(fw_cfg, 0x0F, 2)
    assert read_item(fw_cfg, 0x03, 8) == struct.pack("<Q", 128 * MiB)


def test_bootorder_names_the_ide_disks_seabios_looks_for(fw_cfg):
    ide = PiixIde()
    disks = {"c": [ide.disk_path(0), ide.disk_path(3)]}

    def paths(letter: str) -> list[str]:
        return disks.get(letter, [])

    fw_cfg.add_file("bootorder", bootorder_file("dc", paths))
    assert read_file(fw_cfg, "bootorder") == b"/pci@i0cf8/ide@1,1/drive@0/disk@0\n/pci@i0cf8/ide@1,1/drive@1/disk@1\0"
    lines = read_file(fw_cfg, "bootorder").rstrip(b"\0").decode().split("\n")
    # bootprio_find_ata_device(pci 00:01.1, chanid, slave) -> build_ata_path -> find_prio
    for chanid, slave, prio in ((0, 0, 1), (1, 1, 2), (0, 1, -1)):
        pattern = f"/pci@i0cf8/*@1,1/drive@{chanid:x}/disk@{slave:x}"
        found = next((i + 1 for i, line in enumerate(lines) if glob_prefix(pattern, line)), -1)
        assert found == prio
    assert bootorder_file("a", paths) == b""  # nothing of that kind: QEMU writes an empty file


def test_sercon_port_is_a_romfile_integer(fw_cfg):
    fw_cfg.add_file("etc/sercon-port", sercon_port_file(0x3F8))
    data = read_file(fw_cfg, "etc/sercon-port")
    assert len(data) in (1, 2, 4, 8) and int.from_bytes(data, "little") == 0x3F8  # romfile_loadint's rules


def test_directory_is_sorted_and_duplicates_are_refused(fw_cfg):
    """fw_cfg_add_file exits on a name already there (QEMU: "duplicate fw_cfg file name");
    fw_cfg_modify_file replaces, as QEMU's reset writes bootorder."""
    fw_cfg.add_file("etc/e820", b"x" * 20)
    fw_cfg.add_file("bootorder", b"one\0")
    with pytest.raises(FwCfgError, match=r"^duplicate fw_cfg file name: bootorder$"):
        fw_cfg.add_file("bootorder", b"two!\0")
    assert read_file(fw_cfg, "bootorder") == b"one\0"
    fw_cfg.modify_file("bootorder", b"two!\0")
    fw_cfg.modify_file("opt/new", b"3")
    entries = directory(fw_cfg)
    assert list(entries) == ["bootorder", "etc/e820", "opt/new"]
    assert [select for select, _ in entries.values()] == [0x20, 0x21, 0x22]
    assert read_file(fw_cfg, "bootorder") == b"two!\0"


@pytest.mark.parametrize("name", ["", "x" * 56, "bad\0name"])
def test_file_names_are_checked(fw_cfg, name):
    with pytest.raises(FwCfgError, match="fw_cfg file name"):
        fw_cfg.add_file(name, b"")
    assert directory(fw_cfg) == {}


@pytest.mark.parametrize("menu", [False, True])
def test_boot_menu_item(menu):
    """FW_CFG_BOOT_MENU (0x0e), a u16 QEMU always has: -boot menu=on sets it (SeaBIOS's etc/show-boot-menu)."""
    io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    space = AddressSpace(io, "I/O")
    device = FwCfg(128 * MiB, boot_menu=menu)
    device.map(io)
    device.space = space
    try:
        assert read_item(device, 0x0E, 2) == struct.pack("<H", menu)
    finally:
        space.destroy()


def _board(config):
    system = MemoryRegion.container("system", memapi.UINT64_MAX)
    io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
    return PcBoard(system, io, config, bytes(256 * 1024), set_irq=lambda line, level: None,
                   request_reset=lambda: None)


def test_board_adds_user_files_after_its_own_then_writes_bootorder(tmp_path):
    """As QEMU: a user's etc/e820 is a duplicate (the board's came first); a user's bootorder is
    overwritten by the machine's, which fw_cfg_machine_reset writes last."""
    with pytest.raises(FwCfgError, match=r"^duplicate fw_cfg file name: etc/e820$"):
        _board(seabios_config(fw_cfg=(FwCfgFile("etc/e820", b""),)))
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(512 * 8))
    board = _board(seabios_config(drives=(Drive(disk, 0, "raw"),), boot=Boot("c"),
                                  fw_cfg=(FwCfgFile("bootorder", b"mine\0"), FwCfgFile("opt/x", b"1"))))
    try:
        assert board.fw_cfg.files["bootorder"] == b"/pci@i0cf8/ide@1,1/drive@0/disk@0\0"
        assert board.fw_cfg.files["opt/x"] == b"1"
    finally:
        board.close()


def test_run_boot_option_is_checked_as_qemu_boot():
    parser = argparse.ArgumentParser()
    add_options(parser)
    assert parser.parse_args(["--boot", "ba"]).boot == "ba"
    for order, reason in (("cdna", "Too many boot devices for PC"), ("e", "Invalid boot device for PC: 'e'"),
                          ("cc", "Boot device 'c' was given twice")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{order}: {re.escape(reason)}$"):
            boot(order)


@pytest.mark.kvm
@pytest.mark.parametrize("menu", [False, True])
def test_seabios_offers_its_boot_menu_with_boot_menu_on(menu):
    """-boot menu=on reaches SeaBIOS through FW_CFG_BOOT_MENU: it prompts, waits, then finds nothing to boot."""
    with PcMachine(seabios_config(boot=Boot(menu=menu)), stop_at_post_end=True) as machine:
        machine.boot(timeout=120)
    assert (b"Press ESC for boot menu." in machine.log) == menu


@pytest.mark.parametrize("order, flag2, flag1", [("c", 0x02, 0x00), ("cad", 0x12, 0x30), ("dc", 0x23, 0x00),
                                                 ("n", 0x04, 0x00), ("b", 0x01, 0x00)])
def test_cmos_boot_bytes(order, flag2, flag1):
    cmos = Cmos(128 * MiB, 0)
    cmos.set_boot_order(order)
    assert (cmos.cmos[0x3D], cmos.cmos[0x38]) == (flag2, flag1)
    assert cmos.cmos[0x14] == 0x06  # FPU and PS/2 mouse, as pc_cmos_init says
