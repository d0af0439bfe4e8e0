"""Dirty logging on a RAM slot: log_start | guest writes pages 3 and 5, snapshot | log_stop |
log_start again | delete the logged slot."""
from _scenario import MiB, Spaces, mark, report

import memapi
from kvm import ExitReason, Kvm

# Real mode at 0:1000: mov [0x3000], al; mov [0x5000], al; hlt
GUEST = bytes.fromhex("a20030" "a20050" "f4")

kvm = Kvm()
vm = kvm.create_vm()
spaces = Spaces(vm)
ram = memapi.MemoryRegion.ram("ram", MiB)
spaces.root.add_subregion(0, ram)
spaces.memory.write(0x1000, GUEST)
vcpu = vm.create_vcpu(0)
vcpu.set_real_mode(0, 0x1000)
mark(kvm)
ram.set_log(True)
mark(kvm)
exit_reason = vcpu.run()
snapshot = memapi.snapshot_and_clear_dirty(ram, 0, MiB, memapi.DirtyClient.VGA)
mark(kvm)
ram.set_log(False)
mark(kvm)
ram.set_log(True)
mark(kvm)
spaces.root.del_subregion(ram)
report(exit=ExitReason(exit_reason).name, dirty=snapshot.dirty_pages())
