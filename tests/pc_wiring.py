"""Until PcMachine wires them itself: the 16550, PIIX3 IDE, port 0x92 and the boot fw_cfg files
fitted onto a built PcMachine the way the pc machine is meant to carry them. Delete this module
(and call the machine's own options) once kvmshim/pc/machine.py does it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from kvmshim.pc.ata import AtaDisk, DiskImage
from kvmshim.pc.fw_cfg import bootorder_file, parse_boot_order, sercon_port_file
from kvmshim.pc.ide import LEGACY_CHANNELS, PiixIde
from kvmshim.pc.machine import PcMachine
from kvmshim.pc.port92 import Port92
from kvmshim.pc.testdev import IsaDebugExit
from kvmshim.uart import COM1, COM1_IRQ, Uart16550


@dataclass
class PcDevices:
    uart: Uart16550
    ide: PiixIde
    debug_exit: IsaDebugExit


def wire_pc(machine: PcMachine, disks: list[Path], *, on_output: Callable[[bytes], None], boot: str = "c",
            sercon: bool = False, debug_exit_iobase: int = 0xF4) -> PcDevices:
    """COM1 on IRQ 4, the disks on the PIIX3 IDE (IRQ 14/15), CMOS and ``bootorder`` for ``boot``,
    ``etc/sercon-port`` if ``sercon``, port 0x92 and an isa-debug-exit that stops the run."""
    m = machine
    m.io.del_subregion(m.board.serial.region)
    uart = Uart16550(lambda level: m.vm.irq_line(COM1_IRQ, level), on_output=on_output)
    uart.map(m.io, COM1)
    irqs = [lambda level, line=line: m.vm.irq_line(line, level) for _, _, line in LEGACY_CHANNELS]
    ide = PiixIde([AtaDisk(DiskImage(path)) for path in disks], irqs)
    m.board.pci_host.memory = m.board.map.pci
    m.board.pci_host.add(ide)
    ide.map(m.io)
    order = parse_boot_order(boot)
    m.board.cmos.set_boot_order(order)
    m.board.cmos.set_disks(ide.disks())
    disk_paths = [ide.disk_path(i) for i, disk in enumerate(ide.disks()) if disk is not None]
    m.board.fw_cfg.add_file("bootorder", bootorder_file(order, lambda letter: disk_paths if letter == "c" else []))
    if sercon:
        m.board.fw_cfg.add_file("etc/sercon-port", sercon_port_file(COM1))
    Port92(m.request_reset).map(m.io)
    debug_exit = IsaDebugExit(lambda status: m.runner.stop(), iobase=debug_exit_iobase, iosize=4)
    debug_exit.map(m.io)
    return PcDevices(uart, ide, debug_exit)


def boot_pc(disks: list[Path], script, *, timeout: float, sercon: bool = False,
            after_wiring: Optional[Callable[[PcMachine, PcDevices], None]] = None) -> tuple[PcMachine, PcDevices]:
    """Boot SeaBIOS with ``disks`` until ``script`` (a ScriptedInput) is done or the guest writes to
    isa-debug-exit; returns the closed machine (its log still readable) and its devices."""
    with PcMachine() as machine:
        script.on_done = machine.runner.stop
        devices = wire_pc(machine, disks, on_output=script.on_output, sercon=sercon)
        try:
            script.attach(devices.uart)
            if after_wiring is not None:
                after_wiring(machine, devices)
            machine.boot(timeout)
        finally:
            devices.ide.close()
    return machine, devices
