"""What the tracer does after a KVM ioctl succeeded: learn new fds and memslots, and read
what the call left in tracee memory (dirty bitmaps, the kvm_run exit)."""
from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvm import dirty_bitmap_bytes

from .decode import decode_exit, set_bits
from .events import IoctlEvent
from .state import KvmFd, KvmObjects, VcpuState

if TYPE_CHECKING:
    from .tracer import Call, Task


def _created_vm(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    assert event.result is not None  # follow-ups run for calls that returned a result
    task.fds.set(event.result, KvmFd("vm", objects.new_vm()))


def _created_vcpu(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    assert event.result is not None
    task.fds.set(event.result, KvmFd("vcpu", call.target.vm, VcpuState(call.arg)))


def _set_region(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    if call.target.vm is not None and isinstance(event.arg, dict):
        call.target.vm.slots.apply(event.arg)


def _dirty_log(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    """``dirty_pages``: the pages (numbered within the slot) set in the returned bitmap."""
    log, vm = event.arg, call.target.vm
    if vm is None or not isinstance(log, dict):
        return
    slot = vm.slots.get(log.get("as_id", 0), log["slot"])
    if slot is not None:
        bitmap = task.read(log["dirty_bitmap"], dirty_bitmap_bytes(slot.memory_size))
        log["dirty_pages"] = set_bits(bitmap, slot.memory_size // mmap.PAGESIZE)


def _clear_log(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    """``pages``: the page numbers whose dirty bits the caller cleared."""
    log = event.arg
    if isinstance(log, dict):
        bitmap = task.read(log["dirty_bitmap"], (log["num_pages"] + 63) // 64 * 8)
        log["pages"] = set_bits(bitmap, log["num_pages"], log["first_page"])


def _ran(objects: KvmObjects, task: Task, call: Call, event: IoctlEvent) -> None:
    """``exit``: the exit reason and its details, from the vCPU's kvm_run mapping."""
    vcpu = call.target.vcpu
    if vcpu is not None and vcpu.run_addr is not None:
        base = vcpu.run_addr
        event.exit = decode_exit(lambda offset, size: task.read(base + offset, size))


FOLLOW_UPS: dict[str, Callable[[KvmObjects, Task, Call, IoctlEvent], None]] = {
    "KVM_CREATE_VM": _created_vm,
    "KVM_CREATE_VCPU": _created_vcpu,
    "KVM_SET_USER_MEMORY_REGION": _set_region,
    "KVM_SET_USER_MEMORY_REGION2": _set_region,
    "KVM_GET_DIRTY_LOG": _dirty_log,
    "KVM_CLEAR_DIRTY_LOG": _clear_log,
    "KVM_RUN": _ran,
}
