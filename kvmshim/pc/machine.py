"""The pc machine: a PcBoard on its own MemorySystem, KVM's in-kernel irqchip and PIT, SeaBIOS.

Built from a QemuConfig (kvmshim.qemu_options reads one from QEMU's command line; ``kvmshim run
--machine pc`` builds one from its own options). The board comes first, so a bad BIOS, disk or
kernel fails before any fd is open; then the VM as QEMU's kvm_arch_init and pc_init1 set it up
(TSS and identity-map addresses, in-kernel irqchip and PIT), the KVM listeners, and one vCPU per
``-smp`` CPU with the config's CPUID. vCPU 0 starts at the reset vector in SeaBIOS; the others
wait in the kernel for INIT/SIPI (the in-kernel LAPIC). With ``-kernel``, a multiboot kernel is
loaded as QEMU's loader lays it out and vCPU 0 enters it directly in 32-bit protected mode
(kvmshim's shortcut: QEMU runs SeaBIOS first, whose option ROM then jumps to the same state).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import guests.multiboot
from guests import MemoryRange, Module
from guests.plans import E820_RAM
from kvm import Cap, Vcpu, Vm
from listeners.vcpu_runner import RunOutcome

from .. import loader
from ..base import MachineBase, MemoryOptions, VcpuThread
from ..cpuid import Topology, parse_cpu_option
from ..qemu_config import Chardev, IsaDebugcon, QemuConfig
from .board import IDENTITY_MAP_ADDR, TSS_ADDR, PcBoard
from .debugcon import SEABIOS_DEBUG_IOPORT
from .memmap import MiB

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_BIOS = Path("/usr/share/seabios/bios-256k.bin")
DEFAULT_RAM = 128 * MiB
#: SeaBIOS's last words once POST is over and nothing could boot.
POST_DONE = b"No bootable device"
BOOT_TIMEOUT = 60.0


def seabios_config(ram_size: int = DEFAULT_RAM, bios: Path | None = None, **fields: Any) -> QemuConfig:
    """A QemuConfig for watching SeaBIOS: no defaults, COM1, and SeaBIOS's debug console at 0x402."""
    debugcon = IsaDebugcon(Chardev("null"), iobase=SEABIOS_DEBUG_IOPORT)
    return replace(QemuConfig(ram_size=ram_size, bios=bios, vga="none", nodefaults=True,
                              serial=(Chardev("null"),), devices=(debugcon,)), **fields)


class PcMachine(MachineBase):
    """A `pc` (i440FX + PIIX3/PIIX4) as ``config`` describes it. Use as a context manager.

    ``stop_at_post_end`` ends ``boot()`` when SeaBIOS reports "No bootable device" on a debug
    console at 0x402 (its retry loop would run forever). ``exit_status`` is what QEMU would exit
    with: isa-debug-exit's ``(v << 1) | 1``, else 0. ``incoming`` builds a migration's destination,
    as QEMU's ``-incoming``: its disk images stay inactive (unlocked, unwritable) until the stream
    has arrived and the source let go of them. ``options`` are MachineBase's.
    """

    name = "pc"

    def __init__(self, config: QemuConfig | None = None, *, stop_at_post_end: bool = False, incoming: bool = False,
                 **options: Unpack[MemoryOptions]) -> None:
        self.config = config = config or seabios_config()
        bios = config.bios or DEFAULT_BIOS
        if config.bios is None and not bios.exists():
            raise FileNotFoundError(f"no {bios}: install Debian's seabios package or pass a BIOS image")
        self.bios_image = bios.read_bytes()
        cpu = ",".join((config.cpu.model, *config.cpu.features))
        parse_cpu_option(cpu)  # as QEMU, a bad -cpu fails before the kernel is looked at
        self.kernel = _read_kernel(config)
        self.stop_at_post_end = stop_at_post_end
        self.incoming_storage = incoming
        self.exit_status = 0
        self.reset_requested = False
        super().__init__(vcpus=config.smp.cpus, cpu=cpu, **options)
        if self.kernel is not None:
            try:
                self._load_kernel(*self.kernel)
            except BaseException:
                self.close()
                raise

    def _build(self) -> None:
        self.board = PcBoard(self.system, self.io, self.config, self.bios_image, set_irq=self._set_irq,
                             request_reset=self.request_reset, guest_exit=self._guest_exit, memory=self.memory,
                             incoming=self.incoming_storage)
        self.warnings.extend(self.board.warnings)  # the disk probe's, before the CPU's as in QEMU
        self._post_tail, self._post_seen = bytearray(), False
        for debugcon in self.board.debugcons:
            if debugcon.iobase == SEABIOS_DEBUG_IOPORT:
                debugcon.on_output = self._watch_post

    def _setup_vm(self, vm: Vm) -> None:
        vm.set_tss_addr(TSS_ADDR)
        vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        if vm.check_extension(Cap.IRQCHIP):
            vm.create_irqchip()
            if self.config.pit and vm.check_extension(Cap.PIT2):
                vm.create_pit2()
                if self.config.pit_lost_tick_policy == "discard":
                    vm.reinject_control(False)

    def _setup_vcpu(self, vcpu: Vcpu) -> None:
        if vcpu.id == 0:  # the others wait for INIT/SIPI as KVM creates them (MP state UNINITIALIZED)
            vcpu.reset_state()

    def _load_kernel(self, name: str, kernel: bytes, modules: list[Module]) -> None:
        """QEMU's multiboot loader: the kernel sees "FILE APPEND" and each ``-initrd`` module."""
        cmdline = f"{name} {self.config.append}" if self.config.append else name
        layout = [MemoryRange(start, size, kind) for start, size, kind in self.board.e820()]
        plan = guests.multiboot.plan(kernel, cmdline=cmdline, modules=modules, memory_map=layout, name=name)
        loader.apply(self, plan, [r for r in layout if r.type == E820_RAM], vcpus=[self.vcpu])

    # ------------------------------------------------------------ running
    def boot(self, timeout: float | None = BOOT_TIMEOUT) -> RunOutcome:
        """Run every vCPU (vCPU 0 here, the others in threads) until a stop: isa-debug-exit, a
        reset request, the end of POST if asked, or ``timeout`` seconds (GuestTimeout)."""
        aps = [self.start(index, timeout) for index in range(1, len(self.vcpus))]
        try:
            return self.run(timeout)
        finally:
            self._stop_aps(aps)

    def _stop_aps(self, aps: list[VcpuThread]) -> None:
        for thread in aps:
            thread.runner.stop()
        for thread in aps:
            thread.join(30)  # re-raises a fault of that vCPU

    def request_reset(self) -> None:
        """A guest reset request (0xcf9, port 0x92) ends the run: resetting is not modelled."""
        self.reset_requested = True
        self.stop()

    def _guest_exit(self, status: int) -> None:
        self.exit_status = status
        self.stop()

    def _set_irq(self, line: int, level: int) -> None:
        if self.vm is not None:
            self.vm.irq_line(line, level)

    def _watch_post(self, data: bytes) -> None:
        """Stop at the end of SeaBIOS's "No bootable device" line: per byte, only the last
        len(POST_DONE) bytes of the current line are looked at, never the whole log."""
        tail = self._post_tail
        if data != b"\n":
            tail += data
            del tail[:-len(POST_DONE)]
            self._post_seen = self._post_seen or tail == POST_DONE
            return
        if self._post_seen and self.stop_at_post_end:
            self.stop()
        tail.clear()
        self._post_seen = False

    @property
    def log(self) -> bytes:
        """What the firmware wrote on its debug console (0x402), if the config has one."""
        return b"".join(bytes(d.output) for d in self.board.debugcons if d.iobase == SEABIOS_DEBUG_IOPORT)

    def _topology(self, vcpus: int) -> Topology:
        return Topology(cores=self.config.smp.cores, threads=self.config.smp.threads)

    def activate_storage(self) -> None:
        for image in self.board.images:
            image.activate()

    def inactivate_storage(self) -> None:
        for image in self.board.images:
            image.inactivate()

    def close(self) -> None:
        """MachineBase.close, then the disk images are flushed and closed."""
        try:
            super().close()
        finally:
            if "board" in self.__dict__:
                self.board.close()


def _read_kernel(config: QemuConfig) -> tuple[str, bytes, list[Module]] | None:
    """``-kernel`` and its ``-initrd`` modules, read before any fd opens (QEMU's wording on failure)."""
    if config.kernel is None:
        return None
    try:
        kernel = config.kernel.read_bytes()
    except OSError as err:
        raise OSError(err.errno, f"could not open kernel file '{config.kernel}': {err.strerror}") from None
    modules = []
    for spec in (config.initrd.split(",") if config.initrd else []):
        path = spec.split(" ", 1)[0]
        try:
            modules.append(Module(Path(path).read_bytes(), spec))
        except OSError as err:
            raise OSError(err.errno, f"Failed to open file '{path}': {err.strerror}") from None
    return str(config.kernel), kernel, modules
