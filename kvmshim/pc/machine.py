"""The pc machine: a PcBoard on its own MemorySystem, KVM's in-kernel irqchip and PIT, SeaBIOS."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from kvm import Cap, Vcpu, Vm
from listeners.vcpu_runner import RunOutcome

from ..base import MachineBase
from .board import IDENTITY_MAP_ADDR, TSS_ADDR, PcBoard
from .memmap import MiB

DEFAULT_BIOS = Path("/usr/share/seabios/bios-256k.bin")
DEFAULT_RAM = 128 * MiB
#: SeaBIOS's last words once POST is over and nothing could boot: the run ends with that line.
POST_DONE = b"No bootable device"
BOOT_TIMEOUT = 60.0


class PcMachine(MachineBase):
    """A `pc` (i440FX + PIIX3/PIIX4) booting a BIOS image. Use as a context manager.

    The board is built first, so a bad BIOS image fails before any fd is open; then the VM
    as QEMU sets it up (TSS and identity-map addresses, in-kernel irqchip and PIT), the KVM
    listeners and the vCPU at the reset vector. ``options`` are MachineBase's.
    """

    name = "pc"

    def __init__(self, ram_size: int = DEFAULT_RAM, bios: Optional[Path] = None, *,
                 on_output: Optional[Callable[[bytes], None]] = None, **options) -> None:
        if bios is None and not DEFAULT_BIOS.exists():
            raise FileNotFoundError(f"no {DEFAULT_BIOS}: install Debian's seabios package or pass a BIOS image")
        self.bios_image = Path(bios or DEFAULT_BIOS).read_bytes()
        self.ram_size = ram_size
        self.on_output = on_output
        self.reset_requested = False
        super().__init__(**options)

    def _build(self) -> None:
        self.board = PcBoard(self.system, self.io, self.ram_size, self.bios_image,
                             request_reset=self.request_reset, on_debug=self._on_debug, on_output=self.on_output)

    def _setup_vm(self, vm: Vm) -> None:
        vm.set_tss_addr(TSS_ADDR)
        vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        if vm.check_extension(Cap.IRQCHIP):
            vm.create_irqchip()
            if vm.check_extension(Cap.PIT2):
                vm.create_pit2()

    def _setup_vcpu(self, vcpu: Vcpu) -> None:
        vcpu.reset_state()

    @property
    def log(self) -> bytes:
        """What the firmware wrote on the debug console."""
        return bytes(self.board.debugcon.output)

    def boot(self, timeout: Optional[float] = BOOT_TIMEOUT) -> RunOutcome:
        """Run from the reset vector until POST is over (or the guest asks for a reset)."""
        return self.run(timeout)

    def request_reset(self) -> None:
        """A guest reset request (0xcf9) ends the run: resetting is not modelled."""
        self.reset_requested = True
        self.stop()

    def _on_debug(self, data: bytes) -> None:
        if self.on_output is not None:
            self.on_output(data)
        log = self.board.debugcon.output
        if data == b"\n" and POST_DONE in log[log.rfind(b"\n", 0, -1) + 1:]:
            self.stop()
