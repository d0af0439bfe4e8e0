"""The PIIX3 IDE function (00:01.1, 8086:7010) as QEMU's hw/ide/piix.c builds it.

Prog-if 0x80 (legacy mode, bus-master capable): the primary channel at 0x1f0-0x1f7 and
0x3f6 on ISA IRQ 14, the secondary at 0x170-0x177 and 0x376 on IRQ 15, both ``ide``
regions mapped whatever the command register says. BAR4 is the 16-port
``piix-bmdma-container`` (``piix-bmdma`` command/status and ``bmdma`` PRD address per
channel). The bus-master registers behave as QEMU's, but no DMA transfer ever starts:
the disks offer PIO only, which is what SeaBIOS (built without ATA_DMA) uses.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from memapi import AccessRules, MemoryRegion

from ..migration.vmstate import VMStateDescription
from .ata import AtaDisk, IdeBus
from .pci import BAR_SPACE_IO, PciDevice, devfn
from .ports import port_region

PIIX3_IDE_DEVFN = devfn(1, 1)
#: (command block, control block, ISA IRQ) of the primary and secondary channels.
LEGACY_CHANNELS = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))
PROG_IF, STATUS, BMIBA = 0x09, 0x06, 0x20
STATUS_FAST_BACK_DEVSEL_MEDIUM = 0x0280
BM_CMD, BM_STATUS = 0, 2
BM_CMD_START, BM_CMD_KEPT = 0x01, 0x09
BM_STATUS_ACTIVE, BM_STATUS_ERROR, BM_STATUS_INT, BM_STATUS_KEPT = 0x01, 0x02, 0x04, 0x60
BMDMA_BAR = 4
Irq = Callable[[int], None]


class BusMaster:
    """One channel's bus-master registers: command, status and the PRD table address."""

    vmstate = VMStateDescription("bmdma", fields=("cmd", "status", "addr"))

    def __init__(self) -> None:
        self.cmd = self.status = self.addr = 0
        self.registers = port_region("piix-bmdma", 4, self._read, self._write, valid=AccessRules(1, 4),
                                     impl=AccessRules(1, 4))
        self.prd = port_region("bmdma", 4, self._addr_read, self._addr_write, valid=AccessRules(1, 4),
                               impl=AccessRules(1, 4))

    def interrupt(self) -> None:
        self.status |= BM_STATUS_INT

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        if size != 1:
            return (1 << 8 * size) - 1
        return self.cmd if offset == BM_CMD else self.status if offset == BM_STATUS else 0xFF

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if size != 1:
            return
        if offset == BM_CMD:
            if value & BM_CMD_START:  # nothing to transfer: START only shows ACTIVE
                self.status |= BM_STATUS_ACTIVE
            else:
                self.status &= ~BM_STATUS_ACTIVE
            self.cmd = value & BM_CMD_KEPT
        elif offset == BM_STATUS:  # bits 1-2 are write-one-to-clear, 5-6 plain, 0 read-only
            self.status = (value & BM_STATUS_KEPT | self.status & BM_STATUS_ACTIVE
                           | self.status & ~value & (BM_STATUS_ERROR | BM_STATUS_INT))

    def _addr_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return self.addr >> 8 * offset & (1 << 8 * size) - 1

    def _addr_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        mask = (1 << 8 * size) - 1 << 8 * offset
        self.addr = (self.addr & ~mask | value << 8 * offset & mask) & ~3


class PiixIde(PciDevice):
    """Up to four disks: primary master, primary slave, secondary master, secondary slave.

    ``set_irqs`` are the ISA lines 14 and 15 (``set_irq(level)`` each), called on changes only.
    """

    #: QEMU's vmstate_ide_pci: the function, its bus masters and both channels with their units.
    vmstate = VMStateDescription("ide", fields=("config", "bus_masters", "buses"))

    def __init__(self, disks: Sequence[AtaDisk | None] = (),
                 set_irqs: Sequence[Irq | None] = (None, None)) -> None:
        super().__init__(PIIX3_IDE_DEVFN, 0x8086, 0x7010, 0x0101)
        if len(disks) > 4:
            raise ValueError(f"PIIX3 IDE: {len(disks)} disks, but two channels take at most four")
        slots = list(disks) + [None] * (4 - len(disks))
        self.config[PROG_IF] = 0x80
        self.config[STATUS:STATUS + 2] = STATUS_FAST_BACK_DEVSEL_MEDIUM.to_bytes(2, "little")
        self.bus_masters = (BusMaster(), BusMaster())
        self.buses = tuple(IdeBus(index, (slots[2 * index], slots[2 * index + 1]),
                                  self._irq(self.bus_masters[index], set_irqs[index])) for index in range(2))
        self.bmdma = MemoryRegion.container("piix-bmdma-container", 16)
        for index, master in enumerate(self.bus_masters):
            self.bmdma.add_subregion(8 * index, master.registers)
            self.bmdma.add_subregion(8 * index + 4, master.prd)
        self.register_bar(BMDMA_BAR, BAR_SPACE_IO, self.bmdma)

    @staticmethod
    def _irq(master: BusMaster, line: Irq | None) -> Irq:
        """bmdma_irq: every raise also sets the channel's bus-master INT status bit."""
        def set_irq(level: int) -> None:
            if level:
                master.interrupt()
            if line is not None:
                line(level)
        return set_irq

    def map(self, io: MemoryRegion) -> None:
        """The legacy ports (BAR4 follows the firmware once the function is on a PciHost)."""
        for bus, (command, control, _) in zip(self.buses, LEGACY_CHANNELS, strict=True):
            bus.map(io, command, control)

    def disk_path(self, index: int) -> str:
        """The OpenFirmware path QEMU gives disk ``index`` (0-3) in ``bootorder``; SeaBIOS's build_ata_path."""
        return f"/pci@i0cf8/ide@{self.devfn >> 3:x},{self.devfn & 7:x}/drive@{index // 2:x}/disk@{index % 2:x}"

    def disks(self) -> list[AtaDisk | None]:
        return [unit.disk for bus in self.buses for unit in bus.units]

    def close(self) -> None:
        """Flush and close the disks' images (the machine's last word to them)."""
        for disk in self.disks():
            if disk is not None:
                disk.image.close()
