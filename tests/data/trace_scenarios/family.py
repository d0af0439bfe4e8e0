"""Threads, forks and exec: a vCPU created and run to HLT in a thread | a forked child makes
its own VM | a vCPU spins in KVM_RUN in one thread while another thread execs a program that
uses the inherited /dev/kvm fd (exec kills the spinning thread inside KVM_RUN)."""
import mmap
import os
import sys
import threading
import time

from _scenario import mark, report

from kvm import Kvm, ffi

# Real mode at 0:1000: hlt.  At 0:2000: jmp $.
HLT, SPIN = b"\xf4", b"\xeb\xfe"

kvm = Kvm()
vm = kvm.create_vm()
host = mmap.mmap(-1, 0x10000)
host[0x1000:0x1001], host[0x2000:0x2002] = HLT, SPIN
vm.set_user_memory_region(0, 0, len(host), int(ffi.cast("uintptr_t", ffi.from_buffer(host))))


def run_vcpu(vcpu_id: int, ip: int, started: threading.Event | None = None) -> None:
    vcpu = vm.create_vcpu(vcpu_id)
    vcpu.set_real_mode(0, ip)
    if started is not None:
        started.set()
    vcpu.run()


thread = threading.Thread(target=run_vcpu, args=(0, 0x1000))
thread.start()
thread.join()
mark(kvm)
child = os.fork()
if child == 0:
    Kvm().create_vm()
    os._exit(0)
os.waitpid(child, 0)
mark(kvm)
inherited = os.open("/dev/kvm", os.O_RDWR)
os.set_inheritable(inherited, True)
spinning = threading.Event()
threading.Thread(target=run_vcpu, args=(1, 0x2000, spinning), daemon=True).start()
spinning.wait()
time.sleep(0.2)  # let it enter KVM_RUN
report(child=child, inherited=inherited)
program = "import fcntl, sys; from kvm import lib; fcntl.ioctl(int(sys.argv[1]), lib.KVM_GET_API_VERSION)"
threading.Thread(target=os.execv, args=(sys.executable, [sys.executable, "-c", program, str(inherited)])).start()
time.sleep(30)  # the exec ends this process image
