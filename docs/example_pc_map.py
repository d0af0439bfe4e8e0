from memapi import AddressSpace, info_mtree, transaction
from memapi import MemoryRegion as MR

GiB, MiB = 1 << 30, 1 << 20
system = MR.container("system", 1 << 64)
ram = MR.ram("ram", 4 * GiB)                      # MAP_NORESERVE: costs nothing until touched
pci = MR.container("pci", 1 << 64)
vram = MR.ram("vram", 16 * MiB)
vga_area = MR.container("vga-area", 0x20000)
with transaction():                               # one render, one listener pass
    system.add_subregion(0, MR.alias("lomem", ram, 0, 0xE0000000))
    system.add_subregion(4 * GiB, MR.alias("himem", ram, 0xE0000000, 512 * MiB))
    system.add_subregion_overlap(0xA0000, MR.alias("vga-window", pci, 0xA0000, 0x20000), 1)
    system.add_subregion(0xE0000000, MR.alias("pci-hole", pci, 0xE0000000, 512 * MiB))
    pci.add_subregion(0xA0000, vga_area)
    vga_area.add_subregion(0, MR.alias("vga-bank0", vram, 0x10000, 0x8000))
    vga_area.add_subregion(0x8000, MR.alias("vga-bank1", vram, 0x20000, 0x8000))
    pci.add_subregion(0xE1000000, vram)
    pci.add_subregion(0xE2000000, MR.io("vga-mmio", 0x10000))
memory = AddressSpace(system, "memory")
print(info_mtree(), info_mtree(flatview=True), sep="")
