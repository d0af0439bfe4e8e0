"""Coalesced zones registered and unregistered: MMIO | PIO."""
from _scenario import NO_OPS, Spaces, mark

import memapi
from kvm import Kvm

kvm = Kvm()
spaces = Spaces(kvm.create_vm())
mmio = memapi.MemoryRegion.io("mmio-dev", 0x1000, NO_OPS)
port = memapi.MemoryRegion.io("port-dev", 8, NO_OPS)
spaces.root.add_subregion(0xFE001000, mmio)
spaces.io_root.add_subregion(0x710, port)
mark(kvm)
mmio.add_coalescing(0, 0x100)
mmio.clear_coalescing()
mark(kvm)
port.add_coalescing(0, 8)
port.clear_coalescing()
mark(kvm)
