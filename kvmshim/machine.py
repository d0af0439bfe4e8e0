"""The test machine: RAM, the small devices the bundled guests use, and a bare variant.

``BareMachine`` is RAM at 0 and nothing else, for users who bring their own devices;
``Machine`` adds the serial port, the debug-exit port, the guest-call (ucall) port and the
test devices the bundled guests talk to. Both are MachineBase: one MemorySystem, one VM,
KVM listeners, vCPUs. ``load()`` places any guest kvmshim.loader knows (docs/guests.md).
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import guests
from guests import LoadPlan, Module
from guests.formats import EntryPoint
from memapi import MemoryRegion

from . import loader, ucall
from .base import MachineBase, MachineOptions, VcpuThread
from .devices import DebugExit, PortTestDevice, Serial, TestDevice
from .errors import GuestParamError
from .pc.testdev import IsaDebugExit

if TYPE_CHECKING:
    from typing_extensions import Unpack

MiB = 1 << 20
TESTDEV_GPA = 0xD0000
TEST_ROM_GPA = 0xE0000
DEBUG_EXIT_PORT = 0x501
#: ``raw``: the byte written is the status (the bundled guests' convention); ``qemu``: QEMU's
#: isa-debug-exit, status ``(value << 1) | 1`` (kvm-unit-tests' convention).
DEBUG_EXIT_MODES = ("raw", "qemu")

__all__ = ["BareMachine", "DEBUG_EXIT_MODES", "LoadedGuest", "Machine", "VcpuThread", "guest_params",
           "stdout_writer"]


@dataclass(frozen=True, repr=False)
class LoadedGuest:
    """What ``load()`` placed: the guest's load plan (``plan.describe()`` lists every piece)."""

    plan: LoadPlan

    def __repr__(self) -> str:
        return f"<LoadedGuest {self.plan.describe().splitlines()[0]}>"

    @property
    def name(self) -> str:
        """The guest's name: its file name without the suffix (``hello`` for the bundled hello.S)."""
        return self.plan.source.stem if self.plan.source is not None else self.plan.name

    @property
    def image_gpa(self) -> int | None:
        """Where a real-mode guest's image starts (after its PSP and the real-mode services); None for
        the formats loaded in pieces (ELF, multiboot, a ROM)."""
        return next((s.gpa for s in self.plan.segments if s.what == "image"), None)

    @property
    def cs(self) -> int:
        """The entry code segment (real mode) or selector (32/64-bit)."""
        return self.plan.entry.cs

    @property
    def ip(self) -> int:
        """The entry IP, an offset in ``cs`` (real mode), or the entry EIP/RIP."""
        return self.plan.entry.ip

    @property
    def sp(self) -> int:
        """The entry stack pointer (0 where the format sets up no stack)."""
        return self.plan.entry.sp or 0


class BareMachine(MachineBase):
    """``ram_size`` bytes of RAM at guest-physical 0 (region ``ram``) and nothing else: the memory
    and I/O maps are yours (``system``, ``io``). MachineBase's options: ``vcpus``, ``dirty_ring``,
    ``manual_protect``, ``strict_unassigned``, ``max_slot_size``."""

    name = "bare-machine"

    def __init__(self, ram_size: int = 16 * MiB, **options: Unpack[MachineOptions]) -> None:
        self.ram_size = ram_size
        self._loaded: dict[Path, LoadedGuest] = {}
        super().__init__(**options)

    def _build(self) -> None:
        self.ram = MemoryRegion.ram("ram", self.ram_size)
        self.system.add_subregion(0, self.ram)

    # ------------------------------------------------------------ guests
    def load(self, guest: str | Path, *, load: int | None = None, entry: EntryPoint | None = None,
             cmdline: str = "", modules: Sequence[Module] = (), services: bool = True) -> LoadedGuest:
        """Build ``guest`` (a bundled name or a file of any format in docs/guests.md) if needed, check
        that it fits the RAM, write it and put every vCPU at its entry. ``load``/``entry`` override the
        load address and entry point, ``cmdline``/``modules`` go to a multiboot kernel (a .COM's command
        tail), ``services=False`` leaves out the real-mode interrupt handlers. Raises GuestError."""
        plan = loader.load(self, guest, load=load, entry=entry, cmdline=cmdline, modules=modules,
                           services=services)
        loaded = LoadedGuest(plan)
        if plan.source is not None:
            self._loaded[plan.source] = loaded
        return loaded

    def set_params(self, guest: str | Path, **values: int) -> None:
        """Patch a loaded GNU as guest's parameter dwords (the ``NAME: .long`` lines after
        ``PARAMS_BLOCK``), at the address its load plan put the image."""
        source = guests.resolve(guest)
        loaded = self._loaded.get(source)
        if loaded is None or loaded.image_gpa is None:
            raise GuestParamError(f"guest {source.name} is not loaded on this machine as a real-mode image "
                                  "(load() it first)")
        offsets = guest_params(source)
        for name, value in values.items():
            if name not in offsets:
                raise GuestParamError(f"guest {loaded.name!r} has no parameter {name!r} (it has {', '.join(offsets)})")
            self.memory.write_int(loaded.image_gpa + offsets[name], value, 4)


class Machine(BareMachine):
    """The bundled guests' machine: RAM, ``serial`` at 0x3f8 (output to ``on_output``; every byte also
    in ``serial.output``), ``debug_exit`` at 0x501 (its write ends the run, ``exit_status`` is the
    status; ``debug_exit="qemu"`` is QEMU's isa-debug-exit, status ``(v << 1) | 1``, at
    ``debug_exit_port``), ``ucall`` at 0x99 (guest calls, see ``run_until_call``), ``testdev`` MMIO at
    0xd0000, a test ROM at 0xe0000 and the ``pio-test`` ports at 0x600."""

    name = "machine"

    def __init__(self, ram_size: int = 16 * MiB, *, on_output: Callable[[bytes], None] | None = None,
                 debug_exit: str = "raw", debug_exit_port: int = DEBUG_EXIT_PORT,
                 **options: Unpack[MachineOptions]) -> None:
        if debug_exit not in DEBUG_EXIT_MODES:
            raise ValueError(f"{self.name}: debug_exit={debug_exit!r} (raw or qemu)")
        self.on_output = on_output
        self._debug_exit = (debug_exit, debug_exit_port)
        super().__init__(ram_size, **options)

    def _build(self) -> None:
        super()._build()
        mode, port = self._debug_exit
        self.serial = Serial(self.on_output)
        self.debug_exit: DebugExit | IsaDebugExit = (
            DebugExit(self._guest_exit) if mode == "raw" else IsaDebugExit(self._guest_exit, port))
        self.ucall = ucall.UcallDevice(self.stop)
        self.testdev = TestDevice()
        self.porttest = PortTestDevice()
        self.test_rom = MemoryRegion.rom("test-rom", 0x1000, b"ROM!")
        self.system.add_subregion_overlap(TESTDEV_GPA, self.testdev.region, 1)
        self.system.add_subregion_overlap(TEST_ROM_GPA, self.test_rom, 1)
        self.io.add_subregion(0x3F8, self.serial.region)
        self.io.add_subregion(port, self.debug_exit.region)
        self.ucall.map(self.io)
        self.io.add_subregion(0x600, self.porttest.region)

    def _guest_exit(self, status: int) -> None:
        self.stop()

    @property
    def exit_status(self) -> int:
        """The debug-exit status as a shell sees it (its low byte), 0 for a guest that just halted."""
        return (self.debug_exit.status or 0) & 0xFF

    # ------------------------------------------------------------ guest calls
    def run_until_call(self, timeout: float | None = None) -> ucall.Record:
        """Run the first vCPU to the guest's next call (SYNC, PRINTF, ASSERT, DONE) and return it as a
        typed record; ``Stopped`` if the guest halted or exited first (see kvmshim.ucall)."""
        __tracebackhide__ = True  # pytest: a failure report starts at the test's line
        return ucall.run_until_call(self, timeout, self.ucall)

    def run_until_done(self, timeout: float | None = None,
                       on_print: Callable[[str], None] | None = None) -> list[ucall.Sync | ucall.Print]:
        """Run to the guest's DONE and return its SYNC and PRINTF calls; a failed guest ASSERT raises
        GuestAssertionError naming the guest's file and line."""
        __tracebackhide__ = True
        return ucall.run_until_done(self, timeout, self.ucall, on_print)


_PARAM = re.compile(r"^\s*(\w+):\s*\.long\b", re.M)
_PARAMS_START = re.compile(r"^(?:params:|PARAMS_BLOCK)\s*$", re.M)


def guest_params(source: Path) -> dict[str, int]:
    """Offsets in the image of a guest's parameters: consecutive ``NAME: .long`` lines after
    common.inc's ``PARAMS_BLOCK`` (``jmp main``, ``.p2align 2``, ``params:``: the block starts at +4)."""
    text = source.read_text()
    start = _PARAMS_START.search(text)
    if start is None:
        raise GuestParamError(f"guest {source.name}: no PARAMS_BLOCK")
    names = []
    for line in text[start.end():].splitlines()[1:]:
        match = _PARAM.match(line)
        if not match:
            break
        names.append(match[1])
    return {name: 4 + 4 * i for i, name in enumerate(names)}


def stdout_writer(data: bytes) -> None:
    """An ``on_output`` that writes the guest's serial bytes to stdout as they come."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
