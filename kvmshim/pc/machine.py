"""The pc machine: QEMU's i440FX + PIIX map on memapi, KVM's in-kernel irqchip and PIT, SeaBIOS.

The region tree and devices are built first (a bad BIOS image fails before any fd is
open); then the VM as QEMU sets it up: TSS and identity-map addresses, the in-kernel
irqchip and PIT, the address spaces with their KVM listeners, and the vCPU at the reset vector.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import memapi
from kvm import Cap, Kvm
from listeners.kvm_memory import KVMIoListener, KVMMemoryListener
from listeners.vcpu_runner import RunOutcome, VcpuRunner
from memapi import AddressSpace, MemoryRegion

from ..devices import Serial
from ..machine import Machine
from .cmos import Cmos
from .debugcon import DebugCon
from .fw_cfg import FwCfg, e820_table
from .i440fx import I440FX
from .memmap import E820_RESERVED, MiB, PcMemoryMap
from .pci import PciHost
from .piix import Piix3, Piix4Pm

DEFAULT_BIOS = Path("/usr/share/seabios/bios-256k.bin")
DEFAULT_RAM = 128 * MiB
#: QEMU's kvm_arch_init: one identity-map page, then three TSS pages, reserved in the e820 map.
IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE = 0xFEFFC000, 0x4000
TSS_ADDR = IDENTITY_MAP_ADDR + 0x1000
SERIAL_IOPORT = 0x3F8
#: SeaBIOS's last words once POST is over and nothing could boot: the run ends with that line.
POST_DONE = b"No bootable device"
BOOT_TIMEOUT = 60.0


class PcMachine:
    """One vCPU `pc` (i440FX + PIIX3/PIIX4) booting a BIOS image. Use as a context manager."""

    def __init__(self, ram_size: int = DEFAULT_RAM, bios: Optional[Path] = None, *,
                 on_output: Optional[Callable[[bytes], None]] = None) -> None:
        if bios is None and not DEFAULT_BIOS.exists():
            raise FileNotFoundError(f"no {DEFAULT_BIOS}: install Debian's seabios package or pass a BIOS image")
        image = Path(bios or DEFAULT_BIOS).read_bytes()
        self.on_output = on_output
        self.reset_requested = False
        self.system = MemoryRegion.container("system", memapi.UINT64_MAX)
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        with memapi.transaction():
            self.map = PcMemoryMap(self.system, ram_size, image)
            self.i440fx = I440FX(self.system, self.map.pci, self.map.ram)
            self.piix3 = Piix3(self.request_reset)
            self.pm = Piix4Pm()
            self.pci_host = PciHost((self.i440fx, self.piix3, self.pm))
            self.fw_cfg = FwCfg(ram_size)
            self.fw_cfg.add_file("etc/e820", e820_table(self.e820()))
            self.cmos = Cmos(self.map.below_4g, self.map.above_4g)
            self.debugcon = DebugCon(self._on_debug)
            self.serial = Serial(on_output)
            for device in (self.pci_host, self.piix3, self.pm, self.fw_cfg, self.cmos, self.debugcon):
                device.map(self.io)
            self.io.add_subregion(SERIAL_IOPORT, self.serial.region)
        self.kvm = Kvm()
        self.vm = self.kvm.create_vm()
        self.vm.set_tss_addr(TSS_ADDR)
        self.vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        if self.vm.check_extension(Cap.IRQCHIP):
            self.vm.create_irqchip()
            if self.vm.check_extension(Cap.PIT2):
                self.vm.create_pit2()
        self.memory = AddressSpace(self.system, "memory")
        self.io_space = AddressSpace(self.io, "I/O")
        self.runners: list[VcpuRunner] = []
        self.kvm_memory = KVMMemoryListener(self.vm, inhibit=self._inhibit)
        self.kvm_io = KVMIoListener(self.vm)
        self.memory.register_listener(self.kvm_memory)
        self.io_space.register_listener(self.kvm_io)
        self.vcpu = self.vm.create_vcpu(0)
        self.vcpu.reset_state()
        self.runner = VcpuRunner(self.vcpu, self.memory, self.io_space)
        self.runners.append(self.runner)

    def __enter__(self) -> "PcMachine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unregister the listeners, close the fds, drop the address spaces and unmap guest memory."""
        if self.vcpu.closed:
            return
        self.memory.unregister_listener(self.kvm_memory)
        self.io_space.unregister_listener(self.kvm_io)
        self.vcpu.close()
        self.vm.close()
        self.kvm.close()
        self.memory.destroy()
        self.io_space.destroy()
        self.map.close()

    def e820(self) -> list[tuple[int, int, int]]:
        """The RAM entries, plus KVM's identity map and TSS pages as QEMU reserves them."""
        return self.map.e820() + [(IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE, E820_RESERVED)]

    @property
    def log(self) -> bytes:
        """What the firmware wrote on the debug console."""
        return bytes(self.debugcon.output)

    def boot(self, timeout: Optional[float] = BOOT_TIMEOUT) -> RunOutcome:
        """Run from the reset vector until POST is over (or the guest asks for a reset)."""
        return self.runner.run(timeout)

    def request_reset(self) -> None:
        """A guest reset request (0xcf9) ends the run: resetting is not modelled."""
        self.reset_requested = True
        self.runner.stop()

    def _on_debug(self, data: bytes) -> None:
        if self.on_output is not None:
            self.on_output(data)
        log = self.debugcon.output
        if data == b"\n" and POST_DONE in log[log.rfind(b"\n", 0, -1) + 1:]:
            self.runner.stop()

    # The test machine's, over the same attributes (memory, io_space, kvm_memory, runners).
    mtree = Machine.mtree
    _inhibit = Machine._inhibit
