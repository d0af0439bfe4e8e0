"""The i440FX host bridge (00:00.0): PAM shadowing of 0xc0000-0xfffff and the SMRAM/VGA window.

As QEMU's pam.c models it, each of the 13 PAM segments is four aliases at priority 1
over ``system``, exactly one enabled, chosen by the segment's 2-bit PAM attribute:
0 ``pam-pci`` @pci (DRAM off), 1 ``pam-rom`` (readonly alias of pc.ram), 2 ``pam-pci``
@pc.ram (write-only: QEMU does not split reads from writes), 3 ``pam-ram``.
"""
from __future__ import annotations

from memapi import MemoryRegion

from ..migration.vmstate import VMStateDescription
from .pci import PciDevice

I440FX_PAM = 0x59
I440FX_PAM_SIZE = 7
I440FX_SMRAM = 0x72
SMRAM_D_OPEN = 0x40
SMRAM_DEFAULT = 0x02  # C_BASE_SEG: the compatible SMRAM segment at 0xa0000
PAM_BIOS_BASE, PAM_BIOS_SIZE = 0xF0000, 0x10000
PAM_EXPAN_BASE, PAM_EXPAN_SIZE, PAM_EXPAN_COUNT = 0xC0000, 0x4000, 12
SMRAM_BASE, SMRAM_SIZE = 0xA0000, 0x20000


class PamSegment:
    """QEMU's PAMMemoryRegion: the four aliases of one segment, ``current`` the enabled one."""

    def __init__(self, system: MemoryRegion, pci: MemoryRegion, ram: MemoryRegion, start: int, size: int) -> None:
        self.aliases = [MemoryRegion.alias("pam-pci", pci, start, size),
                        MemoryRegion.alias("pam-rom", ram, start, size),
                        MemoryRegion.alias("pam-pci", ram, start, size),
                        MemoryRegion.alias("pam-ram", ram, start, size)]
        self.aliases[1].set_readonly(True)
        with system.transaction():
            for alias in self.aliases:
                alias.set_enabled(False)
                system.add_subregion_overlap(start, alias, 1)
        self.current = 0

    def update(self, attr: int) -> None:
        """pam_update: switch to the alias of ``attr`` (0..3)."""
        self.aliases[self.current].set_enabled(False)
        self.current = attr
        self.aliases[attr].set_enabled(True)


class I440FX(PciDevice):
    """8086:1237 at 00:00.0: puts ``pci`` under ``system`` and owns the PAM and SMRAM aliases."""

    vmstate = VMStateDescription("I440FX", fields=("config",))  # PAM and SMRAM follow (post_load)

    def __init__(self, system: MemoryRegion, pci: MemoryRegion, ram: MemoryRegion) -> None:
        super().__init__(0, 0x8086, 0x1237, 0x0600, revision=0x02)
        self.config[I440FX_SMRAM] = SMRAM_DEFAULT
        self.smram_region = MemoryRegion.alias("smram-region", pci, SMRAM_BASE, SMRAM_SIZE)
        with system.transaction():
            system.add_subregion_overlap(0, pci, -1)
            system.add_subregion_overlap(SMRAM_BASE, self.smram_region, 1)
            self.pam = [PamSegment(system, pci, ram, PAM_BIOS_BASE, PAM_BIOS_SIZE)]
            self.pam += [PamSegment(system, pci, ram, PAM_EXPAN_BASE + i * PAM_EXPAN_SIZE, PAM_EXPAN_SIZE)
                         for i in range(PAM_EXPAN_COUNT)]
            self.update_memory_mappings()

    def pam_attr(self, segment: int) -> int:
        """Segment 0 is 0xf0000 (high nibble of PAM0); then two 16 KiB segments per register, low nibble first."""
        reg = self.config[I440FX_PAM + (segment + 1) // 2]
        return reg >> (0 if segment & 1 else 4) & 3

    def update_memory_mappings(self) -> None:
        """i440fx_update_memory_mappings: every PAM segment and the SMRAM window in one transaction."""
        with self.smram_region.transaction():
            for i, segment in enumerate(self.pam):
                segment.update(self.pam_attr(i))
            self.smram_region.set_enabled(not self.config[I440FX_SMRAM] & SMRAM_D_OPEN)

    def config_written(self, offset: int, size: int) -> None:
        pam_end = I440FX_PAM + I440FX_PAM_SIZE
        if offset < pam_end and I440FX_PAM < offset + size or offset <= I440FX_SMRAM < offset + size:
            self.update_memory_mappings()
