"""PIIX3 (00:01.0, PCI-to-ISA bridge) and PIIX4 power management (00:01.3) with its ACPI registers.

PIIX3 brings ``piix3-reset-control`` (0xcf9, priority 1 over pci-conf-idx). PIIX4 PM maps
the 64-port ``piix4-pm`` container at PMBASE (config 0x40) once PMREGMISC (0x80) bit 0 is
set: ``acpi-evt`` (PM1 status/enable; no PM1 event is ever raised), ``acpi-cnt`` (PM1
control) and ``acpi-tmr``, the 24-bit 3.579545 MHz ACPI timer.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from memapi import AccessRules, MemoryRegion

from ..migration.vmstate import VMStateDescription
from .pci import INTERRUPT_PIN, PciDevice, devfn
from .ports import ignore_write, port_region

RCR_IOPORT = 0xCF9
RCR_RESET = 0x04
RCR_KEEP = 0x02
PMBASE, PMREGMISC, DEVACTB_APMC = 0x40, 0x80, 0x5B
PM_IO_SIZE = 64
PM_TIMER_HZ = 3_579_545
PM1_CNT_SLP_EN = 1 << 13
WORD = AccessRules(2, 2)


class Piix3(PciDevice):
    """8086:7000, multifunction so that firmware probes 01.1 to 01.7."""

    vmstate = VMStateDescription("PIIX3", fields=("config", "rcr"))

    def __init__(self, on_reset: Callable[[], None]) -> None:
        super().__init__(devfn(1, 0), 0x8086, 0x7000, 0x0601, multifunction=True)
        self.rcr = 0
        self._on_reset = on_reset
        self.reset_control = port_region("piix3-reset-control", 1, self._rcr_read, self._rcr_write)

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion_overlap(RCR_IOPORT, self.reset_control, 1)

    def _rcr_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.rcr

    def _rcr_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if value & RCR_RESET:
            self._on_reset()
            return
        self.rcr = value & RCR_KEEP


class Piix4Pm(PciDevice):
    """8086:7113. Without SMM (KVM here has none) APMC is marked enabled, as QEMU does, so firmware skips SMM init."""

    vmstate = VMStateDescription("piix4_pm", fields=("config", "pm1_en", "pm1_cnt"))  # PMBASE follows

    def __init__(self) -> None:
        super().__init__(devfn(1, 3), 0x8086, 0x7113, 0x0680, revision=0x03)
        self.config[INTERRUPT_PIN] = 0x01
        self.config[PMBASE] = 0x01  # the I/O-space indicator bit
        self.config[DEVACTB_APMC] = 0x02
        self.pm1_en = self.pm1_cnt = 0
        self.region = MemoryRegion.container("piix4-pm", PM_IO_SIZE)
        self.region.set_enabled(False)
        self.region.add_subregion(0, port_region("acpi-evt", 4, self._evt_read, self._evt_write,
                                                 valid=AccessRules(1, 4), impl=WORD))
        self.region.add_subregion(4, port_region("acpi-cnt", 2, self._cnt_read, self._cnt_write,
                                                 valid=AccessRules(1, 2), impl=WORD))
        self.region.add_subregion(8, port_region("acpi-tmr", 4, self._tmr_read, ignore_write,
                                                 valid=AccessRules(4, 4), impl=AccessRules(4, 4)))

    def map(self, io: MemoryRegion) -> None:
        """Disabled at port 0 until firmware programs PMBASE and PMREGMISC."""
        io.add_subregion(0, self.region)

    def config_written(self, offset: int, size: int) -> None:
        """pm_io_space_update when PMBASE or PMREGMISC changes."""
        if offset <= PMREGMISC < offset + size or offset < PMBASE + 4 and PMBASE < offset + size:
            with self.region.transaction():
                self.region.set_enabled(bool(self.config[PMREGMISC] & 1))
                self.region.set_address(self.read_config(PMBASE, 4) & 0xFFC0)

    def _evt_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.pm1_en if offset else 0  # PM1 status: nothing pending

    def _evt_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset:
            self.pm1_en = value

    def _cnt_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.pm1_cnt

    def _cnt_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.pm1_cnt = value & ~PM1_CNT_SLP_EN  # reads as 0; sleeping is not modelled

    def _tmr_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return time.monotonic_ns() * PM_TIMER_HZ // 1_000_000_000 & 0xFFFFFF
