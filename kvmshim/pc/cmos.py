"""The MC146818 RTC and its CMOS RAM: ``rtc`` at 0x70 (2 ports) with the ``rtc-index`` port inside.

The clock reads the host's UTC time (BCD unless register B selects binary, 24-hour unless
it selects 12) and raises no interrupts (register C stays 0); the RAM holds what QEMU's
pc_cmos_init and pc_cmos_init_late write and SeaBIOS reads: memory sizes, CPU count,
equipment, boot order (``set_boot_order``) and IDE disk types and geometry (``set_disks``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from memapi import MemoryRegion

from ..migration.vmstate import VMStateDescription, check_index
from .memmap import KiB, MiB
from .ports import port_region

RTC_IOPORT = 0x70
CMOS_SIZE = 128
SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY = 0, 2, 4, 6, 7, 8, 9, 0x32
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_A_UIP = 0x80
REG_B_24H, REG_B_BINARY = 0x02, 0x04
REG_D_VRT = 0x80  # valid RAM and time
NMI_DISABLE = 0x80
EQUIPMENT, EQUIPMENT_FPU_AND_MOUSE = 0x14, 0x06
BOOT_FLAG1, BOOT_FLAG2 = 0x38, 0x3D
DISK_TYPES, DISK_TRANSLATION = 0x12, 0x39
DISK_TYPE_USER = 47
#: boot_device2nibble: -boot letters as the BIOS's boot-device codes.
BOOT_NIBBLES = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
#: (type byte, parameter block) of the primary master and slave.
DISK_PARAMS = ((0x19, 0x1B), (0x1A, 0x24))
READ_ONLY = (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY, REG_C, REG_D)


def _put(cmos: bytearray, offset: int, value: int, size: int) -> None:
    cmos[offset:offset + size] = value.to_bytes(size, "little")


def memory_bytes(cmos: bytearray, below_4g: int, above_4g: int, cpus: int) -> None:
    """pc_cmos_init's sizes: base KiB, extended KiB above 1 MiB, 64 KiB units above 16 MiB and above 4 GiB."""
    _put(cmos, 0x15, min(below_4g // KiB, 640), 2)
    extended = min(max(below_4g - MiB, 0) // KiB, 0xFFFF)
    _put(cmos, 0x17, extended, 2)
    _put(cmos, 0x30, extended, 2)
    _put(cmos, 0x34, min(max(below_4g - 16 * MiB, 0) // (64 * KiB), 0xFFFF), 2)
    _put(cmos, 0x5B, above_4g // (64 * KiB), 3)
    cmos[0x5F] = cpus - 1


class DiskGeometry(Protocol):
    """What CMOS needs of a disk (kvmshim.pc.ata.AtaDisk): its CHS geometry and BIOS translation."""

    cylinders: int
    heads: int
    sectors: int
    translation: int


def boot_bytes(cmos: bytearray, order: str, floppy_signature_check: bool = True) -> None:
    """set_boot_dev: one nibble per -boot letter (a/b 1, c 2, d 3, n 4) in 0x3d and 0x38's high nibble."""
    nibbles = [BOOT_NIBBLES[letter] for letter in order] + [0] * (3 - len(order))
    cmos[BOOT_FLAG2] = nibbles[1] << 4 | nibbles[0]
    cmos[BOOT_FLAG1] = nibbles[2] << 4 | (0 if floppy_signature_check else 1)


def disk_bytes(cmos: bytearray, disks: Sequence[DiskGeometry | None]) -> None:
    """pc_cmos_init_late: type 47 and parameter blocks for the primary channel's two disks, and the
    translation (BIOS_ATA_TRANSLATION_* - 1) of all four in 0x39."""
    types = translation = 0
    for index, disk in enumerate(list(disks)[:4]):
        if disk is None:
            continue
        translation |= (disk.translation - 1) << 2 * index
        if index >= 2:
            continue
        type_offset, info = DISK_PARAMS[index]
        cylinders, heads = disk.cylinders, disk.heads
        cmos[type_offset] = DISK_TYPE_USER
        cmos[info:info + 9] = bytes((cylinders & 0xFF, cylinders >> 8 & 0xFF, heads, 0xFF, 0xFF,
                                     0xC0 | (heads > 8) << 3, cylinders & 0xFF, cylinders >> 8 & 0xFF,
                                     disk.sectors))
        types |= 0xF0 if index == 0 else 0x0F
    cmos[DISK_TYPES] = types
    cmos[DISK_TRANSLATION] = translation


class Cmos:
    """CMOS RAM behind an index port; the clock registers come from the host clock."""

    vmstate = VMStateDescription("mc146818rtc", fields=("index", "cmos"))

    def __init__(self, below_4g: int, above_4g: int, cpus: int = 1) -> None:
        self.cmos = bytearray(CMOS_SIZE)
        self.index = 0
        self.cmos[REG_A], self.cmos[REG_B], self.cmos[REG_D] = 0x26, REG_B_24H, REG_D_VRT
        memory_bytes(self.cmos, below_4g, above_4g, cpus)
        self.cmos[EQUIPMENT] = EQUIPMENT_FPU_AND_MOUSE
        self.region = port_region("rtc", 2, self._read, self._write)
        self.region.add_subregion(0, port_region("rtc-index", 1, self._read, self._write))

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(RTC_IOPORT, self.region)

    def post_load(self) -> None:
        check_index("mc146818rtc index", self.index, CMOS_SIZE)

    def set_boot_order(self, order: str) -> None:
        """The legacy boot order (QEMU's -boot letters, as QemuConfig.boot.order holds them)."""
        boot_bytes(self.cmos, order)

    def set_disks(self, disks: Sequence[DiskGeometry | None]) -> None:
        """The IDE disks in QEMU's order: primary master, primary slave, secondary master, slave."""
        disk_bytes(self.cmos, disks)

    def _clock(self) -> dict[int, int]:
        now = time.gmtime()
        hour = now.tm_hour
        if not self.cmos[REG_B] & REG_B_24H:
            hour = (hour % 12 or 12) | (0x80 if hour >= 12 else 0)
        values = {SECONDS: now.tm_sec, MINUTES: now.tm_min, HOURS: hour, DAY_OF_WEEK: (now.tm_wday + 1) % 7 + 1,
                  DAY_OF_MONTH: now.tm_mday, MONTH: now.tm_mon, YEAR: now.tm_year % 100,
                  CENTURY: now.tm_year // 100}
        if not self.cmos[REG_B] & REG_B_BINARY:
            values = {reg: _bcd(v & 0x7F) | v & 0x80 for reg, v in values.items()}
        return values

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF
        return self._clock().get(self.index, self.cmos[self.index])

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset == 0:
            self.index = value & ~NMI_DISABLE
        elif self.index == REG_A:
            self.cmos[REG_A] = value & ~REG_A_UIP
        elif self.index not in READ_ONLY:  # setting the clock is not modelled
            self.cmos[self.index] = value


def _bcd(value: int) -> int:
    return value // 10 << 4 | value % 10
