"""A slot overlapping another: KVM says EEXIST and Vm raises KvmError."""
import mmap

from _scenario import mark, report

from kvm import Kvm, KvmError, ffi

kvm = Kvm()
vm = kvm.create_vm()
host = mmap.mmap(-1, 0x4000)
base = int(ffi.cast("uintptr_t", ffi.from_buffer(host)))
vm.set_user_memory_region(0, 0x0, 0x2000, base)
mark(kvm)
try:
    vm.set_user_memory_region(1, 0x1000, 0x2000, base + 0x2000)
except KvmError as err:
    report(type=type(err).__name__, ioctl=err.ioctl, errno=err.errno_name, message=str(err))
