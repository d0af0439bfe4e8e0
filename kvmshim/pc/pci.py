"""Conventional PCI: a function's config space and configuration mechanism #1 on bus 0.

The host ports are QEMU's: ``pci-conf-idx`` (0xcf8, the address latch, written only as
a dword) and ``pci-conf-data`` (0xcfc, a window onto the addressed function's config space).
"""
from __future__ import annotations

from typing import Iterable, Optional

from memapi import AccessRules, MemoryRegion

from .ports import port_region

CONFIG_SPACE_SIZE = 256
HEADER_SIZE = 0x40
VENDOR_ID, DEVICE_ID, COMMAND, REVISION_ID, CLASS_DEVICE = 0x00, 0x02, 0x04, 0x08, 0x0A
CACHE_LINE_SIZE, HEADER_TYPE, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x0C, 0x0E, 0x2C, 0x2E
INTERRUPT_LINE, INTERRUPT_PIN = 0x3C, 0x3D
HEADER_TYPE_MULTI_FUNCTION = 0x80
#: pci_set_default_subsystem_id: Red Hat / "QEMU virtual machine", what SeaBIOS checks to detect QEMU.
SUBVENDOR_REDHAT, SUBDEVICE_QEMU = 0x1AF4, 0x1100
#: IO | MEMORY | MASTER | INTX_DISABLE: the writable command bits of pci_init_wmask.
COMMAND_WMASK = 0x0407
CONFIG_ENABLE = 1 << 31
DWORD = AccessRules(1, 4)


def devfn(device: int, function: int) -> int:
    return device << 3 | function


class PciDevice:
    """One function's 256-byte config space; guest writes go through QEMU's default write mask."""

    def __init__(self, devfn: int, vendor: int, device: int, class_id: int, *, revision: int = 0,
                 multifunction: bool = False) -> None:
        self.devfn = devfn
        self.config = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        for offset, value, size in ((VENDOR_ID, vendor, 2), (DEVICE_ID, device, 2), (REVISION_ID, revision, 1),
                                    (CLASS_DEVICE, class_id, 2), (SUBSYSTEM_VENDOR_ID, SUBVENDOR_REDHAT, 2),
                                    (SUBSYSTEM_ID, SUBDEVICE_QEMU, 2),
                                    (HEADER_TYPE, HEADER_TYPE_MULTI_FUNCTION if multifunction else 0, 1)):
            self.config[offset:offset + size] = value.to_bytes(size, "little")
        self.wmask[COMMAND:COMMAND + 2] = COMMAND_WMASK.to_bytes(2, "little")
        self.wmask[CACHE_LINE_SIZE] = self.wmask[INTERRUPT_LINE] = 0xFF
        self.wmask[HEADER_SIZE:] = b"\xff" * (CONFIG_SPACE_SIZE - HEADER_SIZE)

    def read_config(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def write_config(self, offset: int, value: int, size: int) -> None:
        """pci_default_write_config, then the device's reaction."""
        for i in range(size):
            mask = self.wmask[offset + i]
            self.config[offset + i] = self.config[offset + i] & ~mask | (value >> 8 * i) & mask
        self.config_written(offset, size)

    def config_written(self, offset: int, size: int) -> None:
        """Hook: ``size`` bytes at ``offset`` were just written."""


class PciHost:
    """Configuration mechanism #1 onto bus 0 (QEMU's pci_host_conf/data ops)."""

    def __init__(self, devices: Iterable[PciDevice]) -> None:
        self.devices = {d.devfn: d for d in devices}
        self.config_reg = 0
        self.conf_idx = port_region("pci-conf-idx", 4, self._idx_read, self._idx_write, impl=DWORD)
        self.conf_data = port_region("pci-conf-data", 4, self._data_read, self._data_write, impl=DWORD)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(0xCF8, self.conf_idx)
        io.add_subregion(0xCFC, self.conf_data)

    def _idx_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.config_reg

    def _idx_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset == 0 and size == 4:
            self.config_reg = value

    def _target(self, offset: int, size: int) -> Optional[tuple[PciDevice, int]]:
        """(function, config offset) the latch addresses; None if disabled, absent or out of range."""
        reg = self.config_reg
        if not reg & CONFIG_ENABLE or reg >> 16 & 0xFF:
            return None
        device = self.devices.get(reg >> 8 & 0xFF)
        where = (reg & 0xFC) | offset
        if device is None or where + size > CONFIG_SPACE_SIZE:
            return None
        return device, where

    def _data_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        target = self._target(offset, size)
        if target is None:
            return (1 << 8 * size) - 1
        device, where = target
        return device.read_config(where, size)

    def _data_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        target = self._target(offset, size)
        if target is not None:
            device, where = target
            device.write_config(where, value, size)
