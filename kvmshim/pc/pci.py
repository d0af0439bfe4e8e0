"""Conventional PCI: a function's config space and BARs, and configuration mechanism #1 on bus 0.

The host ports are QEMU's: ``pci-conf-idx`` (0xcf8, the address latch, written only as
a dword) and ``pci-conf-data`` (0xcfc, a window onto the addressed function's config space).
A BAR's region is mapped (priority 1, as pci_update_mappings does) into the bus's memory
or I/O container once the function is attached to a bus and the firmware has enabled
decoding and programmed an address; a change is one add_subregion, set_address or
del_subregion.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from memapi import AccessRules, MemoryRegion

from ..migration.vmstate import VMStateDescription
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
COMMAND_IO, COMMAND_MEMORY = 0x1, 0x2
BAR0, NUM_BARS = 0x10, 6
BAR_SPACE_IO, BAR_MEM_TYPE_64, BAR_MEM_PREFETCH = 0x01, 0x04, 0x08
UINT32_MAX = (1 << 32) - 1


class PciError(ValueError):
    """A BAR or devfn that cannot be registered; the message names the function and the rule."""


@dataclass
class PciBar:
    """A registered BAR: its region, type bits and where it is mapped now (None: not mapped)."""

    region: MemoryRegion
    bar_type: int
    address: int | None = None

    @property
    def is_io(self) -> bool:
        return bool(self.bar_type & BAR_SPACE_IO)

    @property
    def is_64bit(self) -> bool:
        return not self.is_io and bool(self.bar_type & BAR_MEM_TYPE_64)


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
        self.bars: dict[int, PciBar] = {}
        self.bus_memory: MemoryRegion | None = None
        self.bus_io: MemoryRegion | None = None

    def register_bar(self, index: int, bar_type: int, region: MemoryRegion) -> None:
        """pci_register_bar: BAR ``index`` decodes ``region`` (its size a power of two); ``bar_type`` is
        the BAR's low bits (BAR_SPACE_IO, or memory with BAR_MEM_TYPE_64 / BAR_MEM_PREFETCH)."""
        size = region.size
        width = 8 if not bar_type & BAR_SPACE_IO and bar_type & BAR_MEM_TYPE_64 else 4
        if not 0 <= index < NUM_BARS or width == 8 and index == NUM_BARS - 1:
            raise PciError(f"PCI {self.devfn >> 3:02x}.{self.devfn & 7}: no BAR {index} for a {width * 8}-bit BAR")
        taken = index in self.bars or index - 1 in self.bars and self.bars[index - 1].is_64bit
        if taken or width == 8 and index + 1 in self.bars:
            raise PciError(f"PCI {self.devfn >> 3:02x}.{self.devfn & 7}: BAR {index} is already registered")
        if size < (4 if bar_type & BAR_SPACE_IO else 16) or size & (size - 1):
            raise PciError(f"PCI {self.devfn >> 3:02x}.{self.devfn & 7}: BAR {index} region {region.name!r} "
                             f"has size {size:#x}, not a power of two of at least 4 (I/O) or 16 (memory)")
        offset = BAR0 + 4 * index
        self.config[offset:offset + width] = bar_type.to_bytes(width, "little")
        self.wmask[offset:offset + width] = (~(size - 1) & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        self.bars[index] = PciBar(region, bar_type)

    def attach(self, memory: MemoryRegion | None, io: MemoryRegion) -> None:
        """Plug into a bus whose BARs map into ``memory`` (PCI memory space) and ``io``."""
        self.bus_memory, self.bus_io = memory, io
        self.update_mappings()

    def bar_address(self, index: int) -> int | None:
        """pci_bar_address: where BAR ``index`` decodes now; None if disabled, sizing, zero or wrapping."""
        bar = self.bars[index]
        size = bar.region.size
        command = self.read_config(COMMAND, 2)
        if not command & (COMMAND_IO if bar.is_io else COMMAND_MEMORY):
            return None
        address = self.read_config(BAR0 + 4 * index, 8 if bar.is_64bit else 4) & ~(size - 1)
        last = address + size - 1
        limit = (1 << 64) - 1 if bar.is_64bit else UINT32_MAX
        if not address or last >= limit:
            return None
        return address

    def update_mappings(self) -> None:
        """pci_update_mappings: move each BAR whose decoded address changed."""
        for index, bar in self.bars.items():
            container = self.bus_io if bar.is_io else self.bus_memory
            if container is None:
                continue
            address = self.bar_address(index)
            if address == bar.address:
                continue
            if address is None:
                container.del_subregion(bar.region)
            elif bar.address is None:
                container.add_subregion_overlap(address, bar.region, 1)
            else:
                bar.region.set_address(address)
            bar.address = address

    def read_config(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def write_config(self, offset: int, value: int, size: int) -> None:
        """pci_default_write_config, then the device's reaction."""
        for i in range(size):
            mask = self.wmask[offset + i]
            self.config[offset + i] = self.config[offset + i] & ~mask | (value >> 8 * i) & mask
        if offset < BAR0 + 4 * NUM_BARS and BAR0 < offset + size or offset <= COMMAND < offset + size:
            self.update_mappings()
        self.config_written(offset, size)

    def config_written(self, offset: int, size: int) -> None:
        """Hook: ``size`` bytes at ``offset`` were just written."""

    def post_load(self) -> None:
        """After migration (each function's vmstate saves ``config``): map the BARs where the config
        space says, and let the device react as if the whole space had been written (PAM, PMBASE)."""
        self.update_mappings()
        self.config_written(0, CONFIG_SPACE_SIZE)


class PciHost:
    """Configuration mechanism #1 onto bus 0 (QEMU's pci_host_conf/data ops).

    ``memory`` is the PCI memory space memory BARs map into (the pc machine's ``pci``
    container); I/O BARs map into the I/O space given to ``map``.
    """

    #: The address latch; each function on the bus migrates in its own section.
    vmstate = VMStateDescription("pci-host", fields=("config_reg",))

    def __init__(self, devices: Iterable[PciDevice], memory: MemoryRegion | None = None) -> None:
        self.devices: dict[int, PciDevice] = {}
        self.memory = memory
        self.io: MemoryRegion | None = None
        self.config_reg = 0
        self.conf_idx = port_region("pci-conf-idx", 4, self._idx_read, self._idx_write, impl=DWORD)
        self.conf_data = port_region("pci-conf-data", 4, self._data_read, self._data_write, impl=DWORD)
        for device in devices:
            self.add(device)

    def add(self, device: PciDevice) -> None:
        """Plug ``device`` in at its devfn (attached to the bus at once if the bus is mapped)."""
        if device.devfn in self.devices:
            raise PciError(f"PCI {device.devfn >> 3:02x}.{device.devfn & 7} is already taken")
        self.devices[device.devfn] = device
        if self.io is not None:
            device.attach(self.memory, self.io)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(0xCF8, self.conf_idx)
        io.add_subregion(0xCFC, self.conf_data)
        self.io = io
        for device in self.devices.values():
            device.attach(self.memory, io)

    def _idx_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.config_reg

    def _idx_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset == 0 and size == 4:
            self.config_reg = value

    def _target(self, offset: int, size: int) -> tuple[PciDevice, int] | None:
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
