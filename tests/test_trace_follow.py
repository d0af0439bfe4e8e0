"""The tracer follows threads, forks and execs, and knows KVM fds it did not see being made."""
from __future__ import annotations

import errno
import os
import sys

import pytest

from kvm import Kvm, lib
from kvmshim.trace import trace
from trace_fixture import traced  # noqa: F401 - the fixture

pytestmark = pytest.mark.kvm


def test_threads_forks_and_exec(traced):
    t = traced("family")
    main = t.events[0].pid
    in_thread, forked, exec_phase = t.phases
    vcpu_thread = [e for e in in_thread if e.kind == "vcpu"]
    assert [e.request for e in vcpu_thread] == ["KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_REGS", "KVM_RUN"]
    create = next(e for e in in_thread if e.request == "KVM_CREATE_VCPU")
    assert create.pid != main and {e.pid for e in vcpu_thread} == {create.pid}
    assert vcpu_thread[-1].exit == {"reason": "HLT"}  # kvm_run found though a thread mapped it

    assert [(e.pid, e.kind, e.request, e.vm) for e in forked] == [
        (t.report["child"], "kvm", "KVM_GET_VCPU_MMAP_SIZE", None), (t.report["child"], "kvm", "KVM_CREATE_VM", None)]

    spin = next(e for e in exec_phase if e.request == "KVM_RUN")
    assert spin.vcpu == 1 and spin.result is None  # exec killed its thread inside KVM_RUN
    (version,) = [e for e in exec_phase if e.request == "KVM_GET_API_VERSION"]
    assert (version.pid, version.fd, version.kind, version.result) == (main, t.report["inherited"], "kvm",
                                                                       lib.KVM_API_VERSION)


def test_fds_inherited_from_before_the_trace():
    program = ("import fcntl, os, sys; from kvm import lib; kvm, vm = map(int, sys.argv[1:]); "
               "fcntl.ioctl(os.dup(kvm), lib.KVM_GET_API_VERSION)\n"
               "try: fcntl.ioctl(vm, lib.KVM_CHECK_EXTENSION, 0)\n"
               "except OSError as err: sys.exit(err.errno)")
    with Kvm() as kvm, kvm.create_vm() as vm:
        kvm_fd, vm_fd = kvm.fd, vm.fd
        os.set_inheritable(kvm_fd, True)
        os.set_inheritable(vm_fd, True)
        result = trace([sys.executable, "-c", program, str(kvm_fd), str(vm_fd)])
    assert result.returncode == errno.EIO  # a VM refuses ioctls from another process
    version, check = result.events
    assert (version.kind, version.fd != kvm_fd, version.result) == ("kvm", True, lib.KVM_API_VERSION)
    assert (check.fd, check.kind, check.vm, check.request, check.errno) == (
        vm_fd, "vm", 0, "KVM_CHECK_EXTENSION", "EIO")
