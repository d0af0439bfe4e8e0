"""MachineBase: the wiring every machine shares, and VcpuThread.

A machine is one MemorySystem (its own lock, transactions, listeners and global dirty
tracking: nothing is shared with another machine in the process), the ``system`` and
``io`` roots with their ``memory`` and ``I/O`` address spaces, /dev/kvm, one VM, the KVM
listeners that mirror the spaces into memslots and ioeventfds, and the vCPUs with their
run loops. Subclasses add regions and devices in ``_build`` (before any fd is opened, in
one transaction) and VM set-up in ``_setup_vm`` (before the first vCPU).

Construction that fails half-way releases what it made; ``close()`` finishes every step
even if one fails (a user closed an EventNotifier, a runner raised) and raises the first
error afterwards; a machine dropped unclosed warns (ResourceWarning, as files do) and its
fds and memory go with it when it is collected.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from kvm import Cap, Kvm, Registers, Vcpu, Vm
from listeners.kvm_dirty_ring import KVMDirtyRingListener
from listeners.kvm_memory import KVMIoListener, KVMMemoryListener
from listeners.vcpu_runner import CoalescedRing, RunOutcome, VcpuRunner, paused
from memapi import UINT64_MAX, UNASSIGNED_IO_OPS, AddressSpace, MemoryRegion, MemorySystem, RamBlock

from .cpuid import Topology, cpu_model_table
from .errors import MachineStateError

if TYPE_CHECKING:
    from .migration import IncomingStats, MigrationStats

IO_SPACE_SIZE = 0x10000
_Machine = TypeVar("_Machine", bound="MachineBase")


class MemoryOptions(TypedDict, total=False):
    """MachineBase's memory options (slots, dirty logging, unassigned accesses), for ``**options``."""

    max_slot_size: int | None
    dirty_ring: int
    manual_protect: bool
    strict_unassigned: bool


class MachineOptions(MemoryOptions, total=False):
    """Every MachineBase keyword argument, for ``**options`` of machines that leave the CPUs to the caller."""

    vcpus: int
    cpu: str


class MachineBase:
    """One VM on its own MemorySystem. Use as a context manager.

    Every vCPU gets the CPUID table of ``cpu`` (QEMU's ``-cpu`` spelling: ``qemu64,+feat,-feat``;
    requested features KVM lacks are dropped and listed in ``warnings``, as QEMU warns).
    Dirty logging uses KVM_GET_DIRTY_LOG, with manual protect (GET + CLEAR) when the kernel
    offers it and ``manual_protect`` is true; ``dirty_ring`` (bytes) switches to the per-vCPU
    dirty ring instead. ``strict_unassigned`` makes guest accesses to unassigned memory or
    ports raise UnassignedAccess instead of QEMU's silent default. ``max_slot_size`` splits
    large RAM ranges into several memslots.
    """

    #: What messages, thread names and the memory system call this kind of machine.
    name = "machine"

    def __init__(self, *, vcpus: int = 1, cpu: str = "qemu64", max_slot_size: int | None = None,
                 dirty_ring: int = 0, manual_protect: bool = True, strict_unassigned: bool = False) -> None:
        if not isinstance(vcpus, int) or isinstance(vcpus, bool) or vcpus < 1:
            raise ValueError(f"{self.name}: {vcpus!r} vCPUs (a positive number, at most KVM_CAP_MAX_VCPUS)")
        self._closed = False
        self.kvm: Kvm | None = None
        self.vm: Vm | None = None
        self.vcpus: list[Vcpu] = []
        self.runners: list[VcpuRunner] = []
        self.coalesced: CoalescedRing | None = None
        self.kvm_memory: KVMMemoryListener | None = None
        self.kvm_io: KVMIoListener | None = None
        #: What the machine would tell a user, as QEMU warns (CPU features KVM does not offer).
        self.warnings: list[str] = []
        self.memory_system = MemorySystem(f"{self.name}@{id(self):x}")
        self.system = MemoryRegion.container("system", UINT64_MAX)
        self.io = MemoryRegion.io("io", IO_SPACE_SIZE, UNASSIGNED_IO_OPS)
        self.memory = AddressSpace(self.system, "memory", self.memory_system)
        self.io_space = AddressSpace(self.io, "I/O", self.memory_system)
        try:
            with self.memory_system.transaction():
                self._build()
            kvm = self.kvm = Kvm()
            vm = self.vm = kvm.create_vm()
            self._setup_vm(vm)
            self._add_listeners(vm, max_slot_size, dirty_ring, manual_protect)
            self._add_vcpus(kvm, vm, vcpus, cpu, strict_unassigned)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ subclass hooks
    def _build(self) -> None:
        """Add regions and devices to ``system`` and ``io`` (inside one transaction, no fds yet)."""

    def _setup_vm(self, vm: Vm) -> None:
        """VM-wide set-up that must precede the vCPUs (irqchip, TSS, ...)."""

    def _setup_vcpu(self, vcpu: Vcpu) -> None:
        """Per-vCPU set-up once it exists and has its CPUID (registers, MP state, ...)."""

    # ------------------------------------------------------------ wiring
    def _add_listeners(self, vm: Vm, max_slot_size: int | None, dirty_ring: int, manual_protect: bool) -> None:
        if dirty_ring:
            self.kvm_memory = KVMDirtyRingListener(vm, dirty_ring, max_slot_size=max_slot_size,
                                                   inhibit=self.paused)
        else:
            self.kvm_memory = KVMMemoryListener(vm, max_slot_size=max_slot_size, inhibit=self.paused,
                                                manual_protect=manual_protect)
        self.kvm_io = KVMIoListener(vm)
        self.memory.register_listener(self.kvm_memory)
        self.io_space.register_listener(self.kvm_io)

    def _topology(self, vcpus: int) -> Topology:
        """One package of ``vcpus`` cores, as QEMU 7.2 reads ``-smp N``; the pc machine's is -smp's."""
        return Topology(cores=vcpus)

    def _add_vcpus(self, kvm: Kvm, vm: Vm, count: int, cpu: str, strict_unassigned: bool) -> None:
        supported, topology = kvm.supported_cpuid(), self._topology(count)
        for index in range(count):
            vcpu = vm.create_vcpu(index)
            self.vcpus.append(vcpu)
            table = cpu_model_table(supported, cpu, index, topology)
            vcpu.set_cpuid2(table.entries)
            if not index:
                self.warnings.extend(table.warnings())
            self._setup_vcpu(vcpu)
        if vm.check_extension(Cap.COALESCED_MMIO):
            self.coalesced = CoalescedRing(self.vcpus[0], self.memory, self.io_space)
            self.memory_system.add_coalesced_flusher(self.coalesced.drain)
        ring = self.kvm_memory if isinstance(self.kvm_memory, KVMDirtyRingListener) else None
        for vcpu in self.vcpus:
            runner = VcpuRunner(vcpu, self.memory, self.io_space, coalesced=self.coalesced,
                                strict_unassigned=strict_unassigned)
            if ring is not None:
                ring.add_vcpu(vcpu)
                runner.on_dirty_ring_full = ring.reap
            self.runners.append(runner)

    @property
    def vcpu(self) -> Vcpu:
        """The first vCPU (the bootstrap processor)."""
        return self.vcpus[0]

    @property
    def runner(self) -> VcpuRunner:
        """The first vCPU's run loop."""
        return self.runners[0]

    # ------------------------------------------------------------ running
    def run(self, timeout: float | None = None) -> RunOutcome:
        """Run the first vCPU in this thread until HLT, a stop, or ``timeout`` seconds (GuestTimeout)."""
        return self.runner.run(timeout)

    def start(self, index: int = 0, timeout: float | None = None) -> VcpuThread:
        """Run vCPU ``index`` in a thread of its own (returns once it runs); ``stop()`` on the result
        ends it, ``join()`` re-raises what the run raised (GuestTimeout after ``timeout`` seconds)."""
        runner = self.runners[index]
        thread = VcpuThread(runner, timeout, name=f"{self.name}-vcpu{index}")
        thread.start()
        while not runner.running and thread.is_alive():
            time.sleep(0.001)
        return thread

    def stop(self) -> None:
        """Ask every vCPU's run loop to return after the exit in progress (from any thread)."""
        for runner in self.runners:
            runner.stop()

    def paused(self) -> AbstractContextManager[None]:
        """Hold every vCPU out of KVM_RUN for the block (the KVM listener's inhibit)."""
        return paused(*self.runners)

    def migrate(self, uri: str, **options: Any) -> MigrationStats:
        """Move the running guest to the destination waiting at ``uri`` (``unix:PATH``, ``tcp:HOST:PORT``,
        ``file:PATH``): kvmshim.migration.migrate, pre-copy over the dirty log; returns its figures."""
        from .migration import migrate

        return migrate(self, uri, **options)

    def incoming(self, uri: str, **options: Any) -> IncomingStats:
        """Wait for a migration stream at ``uri`` and load it (kvmshim.migration.incoming); the vCPUs
        stay stopped until ``start()``."""
        from .migration import incoming

        return incoming(self, uri, **options)

    def activate_storage(self) -> None:
        """Take over the machine's disk images (a migration's destination, once the source let go)."""

    def inactivate_storage(self) -> None:
        """Flush and let go of the disk images, refusing writes (a migration's source, vCPUs stopped)."""

    def registers(self, vcpu: int = 0) -> Registers:
        """vCPU ``vcpu``'s general registers as plain ints (KVM_GET_REGS)."""
        return self.vcpus[vcpu].registers()

    def set_registers(self, vcpu: int = 0, **regs: int) -> None:
        """Set the named general registers of vCPU ``vcpu`` (``rip=0x1000, rax=1``); the others keep
        their values."""
        self.vcpus[vcpu].set_registers(**regs)

    # ------------------------------------------------------------ inspection
    def mtree(self, flatview: bool = False, disabled: bool = False, owner: bool = False) -> str:
        """`info mtree` of this machine; with ``flatview``, KVM-mapped ranges are marked ` KVM`."""
        return self.memory_system.info_mtree(flatview=flatview, owner=owner, disabled=disabled,
                                             accel=self.kvm_maps if flatview else None)

    def kvm_maps(self, space: AddressSpace, start: int, size: int) -> bool:
        """Whether a memslot maps exactly ``[start, start+size)`` of ``space`` (`info mtree -f`'s ` KVM`)."""
        kvm_memory = self.kvm_memory
        return space is self.memory and kvm_memory is not None and kvm_memory.has_memory(start, size)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self: _Machine) -> _Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether close() has run (the fds are gone; the regions still answer, without a VM)."""
        return self._closed

    def close(self) -> None:
        """Stop the vCPUs (waiting for their threads to leave run()), unregister the listeners, close
        the vCPU, VM and /dev/kvm fds, drop the address spaces and unmap guest memory. Every step
        runs even if an earlier one failed; the first failure is raised at the end."""
        if self._closed:
            return
        if any(runner.on_this_thread for runner in self.runners):
            raise MachineStateError("close() from one of the machine's vCPU threads would wait for itself: "
                                    "call stop() there and close() from another thread")
        self._closed = True
        errors: list[BaseException] = []

        def attempt(step: Callable[..., object], *args: object) -> None:
            try:
                step(*args)
            except Exception as err:  # finish the other steps, report this one after
                errors.append(err)

        for runner in self.runners:
            attempt(runner.stop)
        while any(runner.running for runner in self.runners):
            time.sleep(0.001)
        if self.coalesced is not None:  # the writes the guest queued last still reach their devices
            attempt(self.coalesced.drain)
            self.memory_system.remove_coalesced_flusher(self.coalesced.drain)
        for space, listener in ((self.memory, self.kvm_memory), (self.io_space, self.kvm_io)):
            if listener is not None and listener.address_space is space:
                attempt(space.unregister_listener, listener)
        self._close_fds()
        for space in (self.memory, self.io_space):
            attempt(space.destroy)
        for block in _ram_blocks(self.system, self.io):
            block.close()
        if errors:
            raise errors[0]

    def _close_fds(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        if self.vm is not None:
            self.vm.close()
        for listener in (self.kvm_memory, self.kvm_io):
            if listener is not None:  # after the VM: KVM held the eventfds until then
                listener.release_eventfds()
        if self.kvm is not None:
            self.kvm.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        warnings.warn(f"{self.name} {self.memory_system.name!r} was not closed", ResourceWarning, stacklevel=1,
                      source=self)
        self._closed = True
        self._close_fds()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.vcpus)} vCPU(s)"
        return f"<{type(self).__name__} {self.memory_system.name!r} {state}>"


def _ram_blocks(*roots: MemoryRegion) -> list[RamBlock]:
    """Each RAM block reachable from ``roots`` (subregions and alias targets), once."""
    blocks = {id(mr.ram_block): mr.ram_block for root in roots for mr in root.reachable() if mr.ram_block is not None}
    return list(blocks.values())


class VcpuThread:
    """A VcpuRunner in a daemon thread of its own; ``join()`` returns the run's outcome or re-raises
    what the run raised (so it holds a ``threading.Thread`` rather than being one)."""

    def __init__(self, runner: VcpuRunner, timeout: float | None = None, name: str = "vcpu0") -> None:
        self.runner = runner
        self.timeout = timeout
        self.outcome: RunOutcome | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self.thread.name

    def start(self) -> None:
        self.thread.start()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        try:
            self.outcome = self.runner.run(self.timeout)
        except BaseException as err:  # handed to join()
            self.error = err

    def stop(self, timeout: float | None = 10) -> RunOutcome | None:
        """Stop the run loop (after the exit in progress) and join."""
        self.runner.stop()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> RunOutcome | None:
        """Wait for the run to end (up to ``timeout`` seconds: None if it is still running)."""
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.outcome
