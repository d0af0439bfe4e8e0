"""QEMU's pc_memory_init and x86_bios_rom_init on memapi.

``pc.ram`` is one RAM block seen through ``ram-below-4g`` (and ``ram-above-4g`` at 4 GiB);
the ``pci`` container (priority -1 in ``system``) holds the firmware: ``pc.bios`` at the
top of 4 GiB, its last 128 KiB as the readonly ``isa-bios`` alias below 1 MiB, and ``pc.rom``.
"""
from __future__ import annotations

import memapi
from memapi import MemoryRegion

MiB = 1 << 20
KiB = 1 << 10
BIOS_ALIGN = 64 * KiB
FOUR_GIB = 1 << 32
PC_ROM_MIN_VGA = 0xC0000
PC_ROM_SIZE = 0x20000
ISA_BIOS_MAX = 128 * KiB
E820_RAM, E820_RESERVED = 1, 2


def split_ram(ram_size: int) -> tuple[int, int]:
    """pc_init1's (below_4g, above_4g): RAM up to 3.5 GiB stays low, else 3 GiB (gigabyte_align)."""
    lowmem = 0xE0000000
    if ram_size >= lowmem:
        lowmem = 0xC0000000
    return (lowmem, ram_size - lowmem) if ram_size >= lowmem else (ram_size, 0)


class PcMemoryMap:
    """The RAM and firmware regions of the pc machine, mapped into ``system``."""

    def __init__(self, system: MemoryRegion, ram_size: int, bios_image: bytes) -> None:
        if not bios_image or len(bios_image) % BIOS_ALIGN:
            raise ValueError(f"BIOS image of {len(bios_image)} bytes: its size must be a multiple of 64 KiB")
        self.below_4g, self.above_4g = split_ram(ram_size)
        self.ram = MemoryRegion.ram("pc.ram", ram_size)
        self.pci = MemoryRegion.container("pci", memapi.UINT64_MAX)
        self.bios = MemoryRegion.rom("pc.bios", len(bios_image), bios_image)
        self.rom = MemoryRegion.rom("pc.rom", PC_ROM_SIZE)
        isa_size = min(len(bios_image), ISA_BIOS_MAX)
        isa_bios = MemoryRegion.alias("isa-bios", self.bios, len(bios_image) - isa_size, isa_size)
        isa_bios.set_readonly(True)
        with system.transaction():
            system.add_subregion(0, MemoryRegion.alias("ram-below-4g", self.ram, 0, self.below_4g))
            if self.above_4g:
                system.add_subregion(FOUR_GIB, MemoryRegion.alias("ram-above-4g", self.ram, self.below_4g,
                                                                  self.above_4g))
            self.pci.add_subregion_overlap(0x100000 - isa_size, isa_bios, 1)
            self.pci.add_subregion(FOUR_GIB - len(bios_image), self.bios)
            self.pci.add_subregion_overlap(PC_ROM_MIN_VGA, self.rom, 1)

    def e820(self) -> list[tuple[int, int, int]]:
        """(address, length, type) of the RAM entries QEMU's pc_memory_init adds."""
        entries = [(0, self.below_4g, E820_RAM)]
        if self.above_4g:
            entries.append((FOUR_GIB, self.above_4g, E820_RAM))
        return entries

    def close(self) -> None:
        """Unmap the RAM blocks (after the address spaces are gone)."""
        for region in (self.ram, self.bios, self.rom):
            if region.ram_block is not None:  # RAM and ROMs: always
                region.ram_block.close()
