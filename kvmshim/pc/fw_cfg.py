"""QEMU's fw_cfg over port I/O: ``fwcfg`` at 0x510 (16-bit selector write at 0x510, data bytes read at 0x511).

Only the traditional interface (FW_CFG_ID = 1, no DMA: SeaBIOS falls back to byte reads).
Items: the "QEMU" signature, ID, UUID, RAM size, CPU counts, the boot menu flag, the IRQ0
override, the file directory and its files, which the machine adds with ``add_file`` (a name
given twice is refused, as QEMU exits on it): ``etc/e820``, the user's ``-fw_cfg`` files (e.g.
``etc/sercon-port``, ``sercon_port_file``), then ``bootorder`` (``bootorder_file``) with
``modify_file``, which replaces a user's file of that name as QEMU's reset does.
Any other selector reads as zeros, QEMU's "no such entry".
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from memapi import AccessRules, MemoryRegion, MemTxAttrs

from ..errors import KvmshimError
from ..migration.vmstate import VMStateDescription
from ..qemu_config import FW_CFG_MAX_FILE_PATH
from .ports import port_region

FW_CFG_IO_BASE = 0x510
FW_CFG_CTL_SIZE = 2
SIGNATURE, ID, UUID, RAM_SIZE, NB_CPUS, BOOT_MENU, MAX_CPUS, FILE_DIR = 0x00, 0x01, 0x02, 0x03, 0x05, 0x0E, 0x0F, 0x19
FILE_FIRST = 0x20
IRQ0_OVERRIDE = 0x8002
WRITE_CHANNEL = 0x4000
ID_TRADITIONAL = 1


class FwCfgError(KvmshimError):
    """A fw_cfg file the table cannot take: a name already there, empty, too long or with a NUL."""


def _combined_valid(mr: MemoryRegion, offset: int, size: int, is_write: bool, attrs: MemTxAttrs) -> bool:
    """fw_cfg_comb_valid: byte accesses, or a 16-bit selector write."""
    return size == 1 or (is_write and size == 2)


class FwCfg:
    """The item table and the selected item's read position."""

    #: The selected item and the read position (QEMU: cur_entry, cur_offset); the items are the machine's.
    vmstate = VMStateDescription("fw_cfg", fields=("current", "offset"))

    def __init__(self, ram_size: int, cpus: int = 1, *, boot_menu: bool = False) -> None:
        self.items: dict[int, bytes] = {
            SIGNATURE: b"QEMU",
            ID: struct.pack("<I", ID_TRADITIONAL),
            UUID: bytes(16),
            RAM_SIZE: struct.pack("<Q", ram_size),
            NB_CPUS: struct.pack("<H", cpus),
            BOOT_MENU: struct.pack("<H", boot_menu),  # -boot menu=on; SeaBIOS's etc/show-boot-menu
            MAX_CPUS: struct.pack("<H", cpus),
            IRQ0_OVERRIDE: struct.pack("<I", 1),
        }
        self.files: dict[str, bytes] = {}
        self._directory()
        self.current = b""
        self.offset = 0
        self.region = port_region("fwcfg", FW_CFG_CTL_SIZE, self._read, self._write,
                                  valid=AccessRules(accepts=_combined_valid), impl=AccessRules(1, 2))

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(FW_CFG_IO_BASE, self.region)

    def add_file(self, name: str, data: bytes) -> None:
        """fw_cfg_add_file: a new file; a name already in the table is refused, as QEMU exits on it."""
        if name in self.files:
            raise FwCfgError(f"duplicate fw_cfg file name: {name}")
        self.modify_file(name, data)

    def modify_file(self, name: str, data: bytes) -> None:
        """fw_cfg_modify_file: the file's new contents, added if it is not there yet."""
        encoded = name.encode()
        if not encoded or len(encoded) >= FW_CFG_MAX_FILE_PATH or b"\0" in encoded:
            raise FwCfgError(f"fw_cfg file name {name!r}: 1 to {FW_CFG_MAX_FILE_PATH - 1} bytes, no NUL")
        self.files[name] = bytes(data)
        self._directory()

    def _directory(self) -> None:
        """The directory (big-endian count, then size, select, name[56] per file), files in name order."""
        directory = struct.pack(">I", len(self.files))
        for index, name in enumerate(sorted(self.files)):
            data = self.files[name]
            directory += struct.pack(">IHH56s", len(data), FILE_FIRST + index, 0, name.encode())
            self.items[FILE_FIRST + index] = data
        self.items[FILE_DIR] = directory

    def select(self, key: int) -> None:
        self.current = self.items.get(key & ~WRITE_CHANNEL, b"")
        self.offset = 0

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        if self.offset >= len(self.current):
            return 0
        self.offset += 1
        return self.current[self.offset - 1]

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if size == 2:
            self.select(value)


def e820_table(entries: list[tuple[int, int, int]]) -> bytes:
    """The ``etc/e820`` file: packed little-endian (address, length, type) records."""
    return b"".join(struct.pack("<QQI", *entry) for entry in entries)


def bootorder_file(order: str, device_paths: Callable[[str], Iterable[str]]) -> bytes:
    """The ``bootorder`` file: newline-separated OpenFirmware paths, best first, NUL-terminated.

    ``device_paths(letter)`` lists the machine's devices of that kind (for ``c``, the IDE
    disks as ``/pci@i0cf8/ide@1,1/drive@0/disk@0``): the paths SeaBIOS's bootprio_find_*
    match, as QEMU writes them for devices given a bootindex. Empty if nothing matches.
    """
    paths = [path for letter in order for path in device_paths(letter)]
    return "\n".join(paths).encode() + b"\0" if paths else b""


def sercon_port_file(port: int | None) -> bytes:
    """``etc/sercon-port``: the little-endian 16-bit port SeaBIOS mirrors its text screen to (0: none)."""
    return struct.pack("<H", port or 0)
