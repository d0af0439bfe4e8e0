"""Slot reuse (test_kvm_listener.py's test_33): slots {0: RAM [0,512M), 1: bios}; one commit maps an overlay
at a0000-bffff."""
from _scenario import NO_OPS, MiB, Spaces, mark

import memapi
from kvm import Kvm

kvm = Kvm()
spaces = Spaces(kvm.create_vm())
spaces.root.add_subregion(0, memapi.MemoryRegion.ram("ram", 512 * MiB))
spaces.root.add_subregion(0xFFFC0000, memapi.MemoryRegion.rom("bios", 0x40000))
mark(kvm)
spaces.root.add_subregion_overlap(0xA0000, memapi.MemoryRegion.io("vga", 0x20000, NO_OPS), 1)
mark(kvm)
