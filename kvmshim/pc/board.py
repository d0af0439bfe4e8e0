"""PcBoard: the pc machine's memory map and devices on memapi alone, no KVM.

PcMachine builds one on its MemorySystem and adds the VM; tests build one on plain address
spaces to check the map, PAM, PCI and the devices without /dev/kvm. What the board carries
comes from a QemuConfig, as QEMU's pc_init1 builds from its command line: the i440FX host
bridge with PAM, PIIX3 (ISA bridge, IDE with the config's disks, reset control), PIIX4 power
management, fw_cfg (RAM size, CPU count, e820, boot order), the RTC/CMOS, port 0x92, a 16550
for each ``-serial``, the VGA text screen unless ``-vga none``, and the ``-device`` list.

Interrupts go to ``set_irq(line, level)`` (the in-kernel PIC/IOAPIC once a VM exists). Where the
character devices' bytes go is the caller's: set each ``serials[i].on_output``, attach a feed for
their input, and each ``debugcons[i].on_output`` (kvmshim.chardev opens QEMU's backends).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

from memapi import AddressSpace, MemoryRegion

from ..qemu_config import IsaDebugcon, QemuConfig
from ..qemu_config import IsaDebugExit as DebugExitConfig
from ..qemu_config import PciTestdev as PciTestdevConfig
from ..qemu_config import PcTestdev as PcTestdevConfig
from ..uart import Uart16550
from .ata import AtaDisk, DiskImage, probed_raw_warning
from .cmos import Cmos
from .debugcon import DebugCon
from .fw_cfg import FwCfg, bootorder_file, e820_table
from .i440fx import I440FX
from .ide import LEGACY_CHANNELS, PiixIde
from .memmap import E820_RESERVED, PcMemoryMap
from .pci import PciHost, devfn
from .piix import Piix3, Piix4Pm
from .port92 import Port92
from .testdev import IsaDebugExit, PciTestdev, PcTestdev
from .vga import VgaText

#: QEMU's kvm_arch_init: one identity-map page, then three TSS pages, reserved in the e820 map.
IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE = 0xFEFFC000, 0x4000
TSS_ADDR = IDENTITY_MAP_ADDR + 0x1000
#: QEMU's serial_hds: COM1-COM4, their ports and ISA IRQs.
SERIAL_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))
#: The first free PCI slot after the host bridge (0) and PIIX3 (1): the VGA's, then the devices'.
FIRST_FREE_SLOT = 2

SetIrq = Callable[[int, int], None]


class PcBoard:
    """i440FX + PIIX3/PIIX4 and the devices of ``config``, mapped into ``system`` and ``io``.

    ``guest_exit(status)`` is called by isa-debug-exit with QEMU's status ``(v << 1) | 1``;
    ``memory`` (the guest's memory space) is what pc-testdev's flush port remaps pages of.
    """

    def __init__(self, system: MemoryRegion, io: MemoryRegion, config: QemuConfig, bios_image: bytes, *,
                 set_irq: SetIrq, request_reset: Callable[[], None],
                 guest_exit: Callable[[int], None] = lambda status: None, memory: AddressSpace | None = None,
                 incoming: bool = False) -> None:
        cpus = config.smp.cpus
        #: What QEMU would warn of (an image whose format was probed); the caller shows them.
        self.warnings: list[str] = []
        with ExitStack() as opened:  # until the board is whole, a failure closes the images opened so far
            disks = _disks(config, opened, self.warnings, active=not incoming)
            #: The disk images, inactive on a migration's destination (``incoming``) until handed over.
            self.images = [disk.image for disk in disks if disk is not None]
            with system.transaction():
                self.map = PcMemoryMap(system, config.ram_size, bios_image)
                self.i440fx = I440FX(system, self.map.pci, self.map.ram)
                self.piix3 = Piix3(request_reset)
                self.pm = Piix4Pm()
                self.ide = PiixIde(disks, [partial(set_irq, line) for _, _, line in LEGACY_CHANNELS])
                self.pci_host = PciHost((self.i440fx, self.piix3, self.pm, self.ide), memory=self.map.pci)
                self.fw_cfg = FwCfg(config.ram_size, cpus, boot_menu=config.boot.menu)
                self.fw_cfg.add_file("etc/e820", e820_table(self.e820()))
                for item in config.fw_cfg:  # after the machine's files, as QEMU: etc/e820 given again fails
                    self.fw_cfg.add_file(item.name, item.data)
                disk_paths = [self.ide.disk_path(i) for i, disk in enumerate(self.ide.disks()) if disk is not None]
                order = bootorder_file(config.boot.order, lambda letter: disk_paths if letter == "c" else [])
                if order:  # QEMU's fw_cfg_machine_reset writes it last, over a user's bootorder
                    self.fw_cfg.modify_file("bootorder", order)
                self.cmos = Cmos(self.map.below_4g, self.map.above_4g, cpus)
                self.cmos.set_boot_order(config.boot.order)
                self.cmos.set_disks(self.ide.disks())
                self.port92 = Port92(request_reset)
                serial_ports = SERIAL_PORTS[:len(config.serial)]  # a fifth -serial gets no ISA port, as in QEMU
                self.serials = [Uart16550(partial(set_irq, irq), name="serial") for _, irq in serial_ports]
                for device in (self.pci_host, self.piix3, self.pm, self.ide, self.fw_cfg, self.cmos, self.port92):
                    device.map(io)
                for uart, (port, _) in zip(self.serials, serial_ports, strict=True):
                    uart.map(io, port)
                self.vga: VgaText | None = None
                slot = FIRST_FREE_SLOT
                if config.vga == "std":
                    self.vga = VgaText()
                    self.vga.map(self.map.pci, io)
                    slot += 1
                self.debug_exits: list[IsaDebugExit] = []
                self.debugcons: list[DebugCon] = []
                self.testdevs: list[PcTestdev] = []
                self.pci_testdevs: list[PciTestdev] = []
                for spec in config.devices:
                    if isinstance(spec, DebugExitConfig):
                        self.debug_exits.append(IsaDebugExit(guest_exit, spec.iobase, spec.iosize))
                        self.debug_exits[-1].map(io)
                    elif isinstance(spec, IsaDebugcon):
                        self.debugcons.append(DebugCon(iobase=spec.iobase, readback=spec.readback))
                        self.debugcons[-1].map(io)
                    elif isinstance(spec, PcTestdevConfig):
                        self.testdevs.append(PcTestdev(set_irq, memory))
                        self.testdevs[-1].map(system, io)
                    elif isinstance(spec, PciTestdevConfig):
                        self.pci_testdevs.append(PciTestdev(devfn(slot, 0)))
                        self.pci_host.add(self.pci_testdevs[-1])
                        slot += 1
            opened.pop_all()

    def e820(self) -> list[tuple[int, int, int]]:
        """The RAM entries, plus KVM's identity map and TSS pages as QEMU reserves them."""
        return self.map.e820() + [(IDENTITY_MAP_ADDR, KVM_PRIVATE_SIZE, E820_RESERVED)]

    def close(self) -> None:
        """Flush and close the disk images (the address spaces may still be up)."""
        self.ide.close()


def _disks(config: QemuConfig, opened: ExitStack, warnings: list[str], active: bool) -> list[AtaDisk | None]:
    """The four IDE units, from the config's drives (index = 2 * bus + unit); each image's close is
    on ``opened``. A drive without a format is probed, with QEMU's warning when it is raw."""
    disks: list[AtaDisk | None] = [None] * 4
    for drive in config.drives:
        image = opened.enter_context(DiskImage(drive.file, readonly=drive.readonly, format=drive.format,
                                               active=active))
        if image.probed:
            warnings.append(probed_raw_warning(drive.file))
        disks[drive.index] = AtaDisk(image)
    return disks
