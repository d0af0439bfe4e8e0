"""PcBoard: the pc machine's memory map and devices on memapi alone, no KVM.

PcMachine builds one on its MemorySystem and adds the VM; tests build one on plain
address spaces to check the map, PAM, PCI and the devices without /dev/kvm.
"""
from __future__ import annotations

from typing import Callable, Optional

from memapi import MemoryRegion

from ..devices import Serial
from .cmos import Cmos
from .debugcon import DebugCon
from .fw_cfg import FwCfg, e820_table
from .i440fx import I440FX
from .memmap import E820_RESERVED, PcMemoryMap
from .pci import PciHost
from .piix import Piix3, Piix4Pm

#: QEMU's kvm_arch_init: one identity-map page, then three TSS pages, reserved in the e820 map.
IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE = 0xFEFFC000, 0x4000
TSS_ADDR = IDENTITY_MAP_ADDR + 0x1000
SERIAL_IOPORT = 0x3F8


class PcBoard:
    """i440FX + PIIX3/PIIX4 with fw_cfg, CMOS, the debug console and COM1, mapped into ``system``/``io``."""

    def __init__(self, system: MemoryRegion, io: MemoryRegion, ram_size: int, bios_image: bytes, *,
                 request_reset: Callable[[], None], on_debug: Optional[Callable[[bytes], None]] = None,
                 on_output: Optional[Callable[[bytes], None]] = None) -> None:
        with system.transaction():
            self.map = PcMemoryMap(system, ram_size, bios_image)
            self.i440fx = I440FX(system, self.map.pci, self.map.ram)
            self.piix3 = Piix3(request_reset)
            self.pm = Piix4Pm()
            self.pci_host = PciHost((self.i440fx, self.piix3, self.pm))
            self.fw_cfg = FwCfg(ram_size)
            self.fw_cfg.add_file("etc/e820", e820_table(self.e820()))
            self.cmos = Cmos(self.map.below_4g, self.map.above_4g)
            self.debugcon = DebugCon(on_debug)
            self.serial = Serial(on_output)
            for device in (self.pci_host, self.piix3, self.pm, self.fw_cfg, self.cmos, self.debugcon):
                device.map(io)
            io.add_subregion(SERIAL_IOPORT, self.serial.region)

    def e820(self) -> list[tuple[int, int, int]]:
        """The RAM entries, plus KVM's identity map and TSS pages as QEMU reserves them."""
        return self.map.e820() + [(IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE, E820_RESERVED)]
