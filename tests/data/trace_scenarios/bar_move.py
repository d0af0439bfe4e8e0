"""Two of three BARs move in one commit: setup | move | teardown."""
from _scenario import MiB, Spaces, mark

import memapi
from kvm import Kvm

kvm = Kvm()
spaces = Spaces(kvm.create_vm())
bars = [memapi.MemoryRegion.ram(f"bar{i}", 0x10000) for i in range(3)]
spaces.root.add_subregion(0, memapi.MemoryRegion.ram("ram", MiB))
for i, bar in enumerate(bars):
    spaces.root.add_subregion(0xE0000000 + i * 0x10000, bar)
mark(kvm)
with memapi.transaction():
    bars[0].set_address(0xF0000000)
    bars[2].set_address(0xF0020000)
mark(kvm)
