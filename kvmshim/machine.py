"""A small machine: memory and I/O AddressSpaces, RAM, devices, the KVM listeners and its vCPUs.

The wiring keeps the layers apart: memapi models memory, kvm/ talks to the
kernel, listeners/ bridges them, and this module only connects the pieces.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, ContextManager, Optional, Union

import guests
import memapi
from kvm import Cap, Kvm, Vcpu
from listeners.kvm_dirty_ring import KVMDirtyRingListener
from listeners.kvm_memory import KVMIoListener, KVMMemoryListener
from listeners.vcpu_runner import CoalescedRing, RunOutcome, VcpuRunner, paused
from memapi import AddressSpace, MemoryRegion

from .devices import DebugExit, PortTestDevice, Serial, TestDevice

MiB = 1 << 20
TESTDEV_GPA = 0xD0000
TEST_ROM_GPA = 0xE0000
BIOS_SIZE = 0x10000


class Machine:
    """One VM with ``vcpus`` vCPUs (``vcpu``/``runner`` are the first), built on the memory API.
    Use as a context manager.

    Dirty logging uses KVM_GET_DIRTY_LOG, with manual protect (GET + CLEAR) when the
    kernel offers it and ``manual_protect`` is true; ``dirty_ring`` (bytes) switches
    to the per-vCPU dirty ring instead. ``strict_unassigned`` makes guest accesses to
    unassigned memory or ports raise UnassignedAccess instead of QEMU's silent default.
    """

    def __init__(self, ram_size: int = 16 * MiB, *, on_output: Optional[Callable[[bytes], None]] = None,
                 max_slot_size: Optional[int] = None, dirty_ring: int = 0, manual_protect: bool = True,
                 vcpus: int = 1, strict_unassigned: bool = False) -> None:
        if not isinstance(vcpus, int) or vcpus < 1:
            raise ValueError(f"machine: {vcpus!r} vCPUs (a positive number, at most KVM_CAP_MAX_VCPUS)")
        self.vcpus: list[Vcpu] = []
        self.runners: list[VcpuRunner] = []
        self.coalesced: Optional[CoalescedRing] = None
        self.kvm_memory: Optional[KVMMemoryListener] = None
        self.kvm_io: Optional[KVMIoListener] = None
        self.ram: Optional[MemoryRegion] = None
        self.test_rom: Optional[MemoryRegion] = None
        self.bios: Optional[MemoryRegion] = None
        self.system = MemoryRegion.container("system", 1 << 64)
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.kvm = Kvm()
        self.vm = self.kvm.create_vm()  # on failure the fds close when collected: nothing else holds them
        self.memory = AddressSpace(self.system, "memory")
        self.io_space = AddressSpace(self.io, "I/O")
        self._closed = False
        try:
            self._build(ram_size, on_output, max_slot_size, dirty_ring, manual_protect, vcpus, strict_unassigned)
        except BaseException:
            self.close()  # a half-built machine (bad size, too many vCPUs) leaks nothing
            raise

    def _build(self, ram_size: int, on_output: Optional[Callable[[bytes], None]], max_slot_size: Optional[int],
               dirty_ring: int, manual_protect: bool, vcpus: int, strict_unassigned: bool) -> None:
        if dirty_ring:
            self.kvm_memory = KVMDirtyRingListener(self.vm, dirty_ring, max_slot_size=max_slot_size,
                                                   inhibit=self._inhibit)
        else:
            self.kvm_memory = KVMMemoryListener(self.vm, max_slot_size=max_slot_size, inhibit=self._inhibit,
                                                manual_protect=manual_protect)
        self.kvm_io = KVMIoListener(self.vm)
        self.memory.register_listener(self.kvm_memory)
        self.io_space.register_listener(self.kvm_io)
        self.ram = MemoryRegion.ram("ram", ram_size)
        self.serial = Serial(on_output)
        self.debug_exit = DebugExit(self._guest_exit)
        self.testdev = TestDevice()
        self.porttest = PortTestDevice()
        self.test_rom = MemoryRegion.rom("test-rom", 0x1000, b"ROM!")
        with memapi.transaction():
            self.system.add_subregion(0, self.ram)
            self.system.add_subregion_overlap(TESTDEV_GPA, self.testdev.region, 1)
            self.system.add_subregion_overlap(TEST_ROM_GPA, self.test_rom, 1)
            self.io.add_subregion(0x3F8, self.serial.region)
            self.io.add_subregion(0x501, self.debug_exit.region)
            self.io.add_subregion(0x600, self.porttest.region)
        for index in range(vcpus):
            self.vcpus.append(self.vm.create_vcpu(index))
        self.vcpu = self.vcpus[0]
        if self.vm.check_extension(Cap.COALESCED_MMIO):
            self.coalesced = CoalescedRing(self.vcpu, self.memory, self.io_space)
        for vcpu in self.vcpus:
            runner = VcpuRunner(vcpu, self.memory, self.io_space, coalesced=self.coalesced,
                                strict_unassigned=strict_unassigned)
            if isinstance(self.kvm_memory, KVMDirtyRingListener):
                self.kvm_memory.add_vcpu(vcpu)
                runner.on_dirty_ring_full = self.kvm_memory.reap
            self.runners.append(runner)
        self.runner = self.runners[0]
        if self.coalesced is not None:
            memapi.add_coalesced_flusher(self.coalesced.drain)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the vCPUs (waiting for their threads to leave run()), unregister the listeners,
        close the vCPU, VM and /dev/kvm fds and unmap guest memory. Safe on a half-built machine."""
        if self._closed:
            return
        self._closed = True
        for runner in self.runners:
            runner.stop()
        while any(runner.running for runner in self.runners):
            time.sleep(0.001)
        if self.coalesced is not None:
            memapi.remove_coalesced_flusher(self.coalesced.drain)
        for space, listener in ((self.memory, self.kvm_memory), (self.io_space, self.kvm_io)):
            if listener is not None and listener.address_space is space:
                space.unregister_listener(listener)
        for vcpu in self.vcpus:
            vcpu.close()
        self.vm.close()
        self.kvm.close()
        self.memory.destroy()
        self.io_space.destroy()
        for region in (self.ram, self.test_rom, self.bios):
            if region is not None:
                region.ram_block.close()

    def paused(self) -> ContextManager[None]:
        """Hold every vCPU out of KVM_RUN for the block (the listener's inhibit)."""
        return paused(*self.runners)

    _inhibit = paused

    # ------------------------------------------------------------ guests
    def load(self, guest: Union[str, Path]) -> guests.GuestSpec:
        """Build ``guest`` if needed, place it in memory and point every vCPU at its entry."""
        spec = guests.spec(guest)
        image = guests.build(guest).read_bytes()
        if spec.kind == "bios":
            self.bios = MemoryRegion.rom("bios", BIOS_SIZE, image)
            with memapi.transaction():
                self.system.add_subregion(spec.load_gpa, self.bios)
                self.system.add_subregion_overlap(spec.alias_gpa, MemoryRegion.alias(
                    "isa-bios", self.bios, 0, BIOS_SIZE), 1)
            for vcpu in self.vcpus:
                vcpu.reset_state()
        else:
            self.memory.write(spec.load_gpa, image)
            for index, vcpu in enumerate(self.vcpus):
                vcpu.set_real_mode(spec.cs, spec.ip, sp=spec.sp or 0)
                if index:  # a guest run by several vCPUs tells them apart by EBX (0 for the first)
                    regs = vcpu.get_regs()
                    regs.rbx = index
                    vcpu.set_regs(regs)
        return spec

    def set_params(self, guest: Union[str, Path], **values: int) -> None:
        """Patch a loaded flat guest's parameter dwords (the ``NAME: .long`` lines after ``params:``)."""
        spec = guests.spec(guest)
        offsets = guest_params(spec.source)
        for name, value in values.items():
            if name not in offsets:
                raise KeyError(f"guest {spec.name!r} has no parameter {name!r} (it has {', '.join(offsets)})")
            self.memory.write_int(spec.load_gpa + offsets[name], value, 4)

    def _guest_exit(self, status: int) -> None:
        for runner in self.runners:
            runner.stop()

    def run(self, timeout: Optional[float] = None) -> RunOutcome:
        return self.runner.run(timeout)

    def start(self, index: int = 0, timeout: Optional[float] = None) -> "VcpuThread":
        """Run vCPU ``index`` in a thread of its own (returns once it runs); ``stop()`` on the result
        ends it, ``join()`` re-raises what the run raised (GuestTimeout after ``timeout`` seconds)."""
        runner = self.runners[index]
        thread = VcpuThread(runner, timeout, name=f"vcpu{index}")
        thread.start()
        while not runner.running and thread.is_alive():
            time.sleep(0.001)
        return thread

    @property
    def exit_status(self) -> int:
        """The debug-exit status, or 0 for a guest that just halted."""
        return self.debug_exit.status or 0

    def mtree(self, flatview: bool = False, disabled: bool = False) -> str:
        """`info mtree` of this machine; with ``flatview``, KVM-mapped ranges are marked ` KVM`."""
        spaces = [self.memory, self.io_space]

        def has_memory(space, start, size):
            return space is self.memory and self.kvm_memory.has_memory(start, size)

        return memapi.info_mtree(flatview=flatview, disabled=disabled, spaces=spaces,
                                 accel=has_memory if flatview else None)


_PARAM = re.compile(r"^\s*(\w+):\s*\.long\b", re.M)
_PARAMS_START = re.compile(r"^(?:params:|PARAMS_BLOCK)\s*$", re.M)


def guest_params(source: Path) -> dict[str, int]:
    """Offsets in the image of a guest's parameters: consecutive ``NAME: .long`` lines after
    common.inc's ``PARAMS_BLOCK`` (``jmp main``, ``.p2align 2``, ``params:``: the block starts at +4)."""
    text = source.read_text()
    start = _PARAMS_START.search(text)
    if start is None:
        raise KeyError(f"guest {source.name}: no PARAMS_BLOCK")
    names = []
    for line in text[start.end():].splitlines()[1:]:
        match = _PARAM.match(line)
        if not match:
            break
        names.append(match[1])
    return {name: 4 + 4 * i for i, name in enumerate(names)}


class VcpuThread(threading.Thread):
    """A daemon thread running a VcpuRunner; ``join()`` re-raises what the run raised."""

    def __init__(self, runner: VcpuRunner, timeout: Optional[float] = None, name: str = "vcpu0") -> None:
        super().__init__(name=name, daemon=True)
        self.runner = runner
        self.timeout = timeout
        self.outcome: Optional[RunOutcome] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.outcome = self.runner.run(self.timeout)
        except BaseException as err:  # handed to join()
            self.error = err

    def stop(self, timeout: Optional[float] = 10) -> Optional[RunOutcome]:
        """Stop the run loop (after the exit in progress) and join."""
        self.runner.stop()
        return self.join(timeout)

    def join(self, timeout: Optional[float] = None) -> Optional[RunOutcome]:  # type: ignore[override]
        super().join(timeout)
        if self.error is not None:
            raise self.error
        return self.outcome


def stdout_writer(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
