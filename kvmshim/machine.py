"""The test machine: RAM, the small devices the bundled guests use, and a bare variant.

``BareMachine`` is RAM at 0 and nothing else, for users who bring their own devices;
``Machine`` adds the serial port, the debug-exit port and the test devices the bundled
guests talk to. Both are MachineBase: one MemorySystem, one VM, KVM listeners, vCPUs.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable, Optional, Union

import guests
from memapi import MemoryRegion

from .base import MachineBase, VcpuThread
from .devices import DebugExit, PortTestDevice, Serial, TestDevice

MiB = 1 << 20
TESTDEV_GPA = 0xD0000
TEST_ROM_GPA = 0xE0000
BIOS_SIZE = 0x10000

__all__ = ["BareMachine", "Machine", "VcpuThread", "guest_params", "stdout_writer"]


class BareMachine(MachineBase):
    """``ram_size`` bytes of RAM at guest-physical 0 (region ``ram``) and nothing else: the memory
    and I/O maps are yours (``system``, ``io``). See MachineBase for the options."""

    name = "bare-machine"

    def __init__(self, ram_size: int = 16 * MiB, **options) -> None:
        self.ram_size = ram_size
        super().__init__(**options)

    def _build(self) -> None:
        self.ram = MemoryRegion.ram("ram", self.ram_size)
        self.system.add_subregion(0, self.ram)


class Machine(BareMachine):
    """The bundled guests' machine: RAM, ``serial`` at 0x3f8 (output to ``on_output``), the
    debug-exit port 0x501 (its byte is the exit status), ``testdev`` MMIO at 0xd0000, a test
    ROM at 0xe0000 and the ``pio-test`` ports at 0x600. ``load()`` places a guest."""

    name = "machine"

    def __init__(self, ram_size: int = 16 * MiB, *, on_output: Optional[Callable[[bytes], None]] = None,
                 **options) -> None:
        self.on_output = on_output
        self.bios: Optional[MemoryRegion] = None
        super().__init__(ram_size, **options)

    def _build(self) -> None:
        super()._build()
        self.serial = Serial(self.on_output)
        self.debug_exit = DebugExit(self._guest_exit)
        self.testdev = TestDevice()
        self.porttest = PortTestDevice()
        self.test_rom = MemoryRegion.rom("test-rom", 0x1000, b"ROM!")
        self.system.add_subregion_overlap(TESTDEV_GPA, self.testdev.region, 1)
        self.system.add_subregion_overlap(TEST_ROM_GPA, self.test_rom, 1)
        self.io.add_subregion(0x3F8, self.serial.region)
        self.io.add_subregion(0x501, self.debug_exit.region)
        self.io.add_subregion(0x600, self.porttest.region)

    # ------------------------------------------------------------ guests
    def load(self, guest: Union[str, Path]) -> guests.GuestSpec:
        """Build ``guest`` if needed, place it in memory and point every vCPU at its entry."""
        spec = guests.spec(guest)
        image = guests.build(guest).read_bytes()
        if spec.kind == "bios":
            self.bios = MemoryRegion.rom("bios", BIOS_SIZE, image)
            with self.memory_system.transaction():
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
        self.stop()

    @property
    def exit_status(self) -> int:
        """The debug-exit status, or 0 for a guest that just halted."""
        return self.debug_exit.status or 0


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


def stdout_writer(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
