"""The flag-update path turns a READONLY slot writable (as tests/test_kvm_listener.py::test_35)."""
from _scenario import MiB, Spaces, mark

import memapi
from kvm import Kvm

kvm = Kvm()
spaces = Spaces(kvm.create_vm())
ram = memapi.MemoryRegion.ram("ram", 2 * MiB)
window = memapi.MemoryRegion.alias("window", ram, 0, 2 * MiB)
window.set_readonly(True)
spaces.root.add_subregion(0, window)
spaces.root.add_subregion(0x10000000, memapi.MemoryRegion.ram("other", 0x1000))
mark(kvm)
# The section stays readonly (the alias): only the flag-update path sees READONLY go away.
spaces.kvm_memory.lookup(0, 2 * MiB).section_readonly = False
ram.set_log(True)
mark(kvm)
