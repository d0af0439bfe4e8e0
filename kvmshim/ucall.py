"""Guest calls to the host, after KVM selftests' ucall: SYNC, PRINTF, ASSERT and DONE.

The guest side is guests/ucall.inc (GNU as) or guests/ucall-nasm.inc (NASM): a call is
``out %al, $UCALL_PORT`` followed by a short jump over a record ("uc", command byte, 32-bit
value, then three NUL-terminated strings: register names, format or message, file). The
UcallDevice stops the run at that OUT; ``run_until_call`` then finds the record at CS base +
RIP (KVM reports an OUT exit with RIP at the instruction or past it, depending on whether it
emulated it, so both are tried), reads the registers the record names and returns a typed
record. Nothing in the guest changes: no register, no flag, no memory, no stack.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from kvm import Vcpu
from listeners.vcpu_runner import RunOutcome
from memapi import AddressSpace, Endianness, MemApiError, MemoryRegion, MemoryRegionOps, MemTxResult

from .errors import KvmshimError
from .migration.vmstate import VMStateDescription

UCALL_PORT = 0x99
_OUT_IMM8 = 0xE6
_MAGIC = b"uc"
_MAX_STRING = 4096  # of a %s argument
_MAX_RECORD = 0x10000  # a longer jump is not over a record: never read more than this


class Command(enum.IntEnum):
    """KVM selftests' numbering (enum ucall_cmd)."""

    SYNC = 1
    ABORT = 2
    PRINTF = 3
    DONE = 4


@dataclass(frozen=True)
class Sync:
    n: int
    args: tuple[int, ...] = ()


@dataclass(frozen=True)
class Print:
    text: str


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class AssertFailed:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: guest assertion failed: {self.message}"

    def raise_(self) -> NoReturn:
        raise GuestAssertionError(self)


@dataclass(frozen=True)
class Stopped:
    """The run ended without a call: the guest halted or wrote the debug-exit port."""

    outcome: RunOutcome
    exit_status: int


@dataclass(frozen=True)
class BadCall:
    """An OUT to the ucall port without a valid record after it (a guest bug, never a host error)."""

    address: int
    reason: str


Record = Sync | Print | Done | AssertFailed | Stopped | BadCall


class GuestAssertionError(AssertionError):
    """A guest ASSERT failed; the message starts with the guest's file and line."""

    def __init__(self, failed: AssertFailed) -> None:
        super().__init__(str(failed))
        self.failed = failed


class UcallError(KvmshimError):
    """The guest ended, or made a malformed call, where run_until_done expected more calls."""


class UcallDevice:
    """The one-byte port the guest's calls write; ``on_call`` (typically: stop the vCPU runners)
    runs at each, so that the run returns to ``run_until_call`` right after the OUT."""

    vmstate = VMStateDescription("kvmshim-ucall")  # a call is over when its OUT is; ``pending`` is the host's

    def __init__(self, on_call: Callable[[], None], port: int = UCALL_PORT) -> None:
        self.port = port
        self.on_call = on_call
        self.pending = False
        self.region = MemoryRegion.io("ucall", 1, MemoryRegionOps(
            read=lambda mr, offset, size: 0, write=self._write, endianness=Endianness.LITTLE))

    def map(self, io_region: MemoryRegion) -> None:
        """Map the port into an I/O root region (a machine's ``io``)."""
        io_region.add_subregion(self.port, self.region)

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.pending = True
        self.on_call()


class Runnable(Protocol):
    memory: AddressSpace
    vcpus: list[Vcpu]

    @property
    def exit_status(self) -> int: ...

    def run(self, timeout: float | None = None) -> RunOutcome: ...


def run_until_call(machine: Runnable, timeout: float | None = None,
                   device: UcallDevice | None = None) -> Record:
    """Run the first vCPU (``machine.run``) until its next call, or until it stops without one.
    ``device`` defaults to ``machine.ucall``. A guest that loops raises GuestTimeout after ``timeout``."""
    if device is None:
        device = getattr(machine, "ucall", None)
        if not isinstance(device, UcallDevice):
            raise UcallError(f"{machine!r} has no ucall device: pass one as device")
    device.pending = False
    outcome = machine.run(timeout)
    if not device.pending:
        return Stopped(outcome, machine.exit_status)
    device.pending = False
    return decode(machine.memory, machine.vcpus[0], device.port)


def run_until_done(machine: Runnable, timeout: float | None = None, device: UcallDevice | None = None,
                   on_print: Callable[[str], None] | None = None) -> list[Sync | Print]:
    """Run until DONE and return the SYNC and PRINTF calls on the way (``on_print`` also gets each
    text). A failed ASSERT raises GuestAssertionError naming the guest's file and line; the guest
    stopping first, or a malformed call, raises UcallError."""
    seen: list[Sync | Print] = []
    while True:
        record = run_until_call(machine, timeout, device)
        if isinstance(record, Done):
            return seen
        if isinstance(record, AssertFailed):
            record.raise_()
        if isinstance(record, (Stopped, BadCall)):
            raise UcallError(f"the guest did not reach DONE: {record}")
        if isinstance(record, Print) and on_print is not None:
            on_print(record.text)
        seen.append(record)


def decode(memory: AddressSpace, vcpu: Vcpu, port: int = UCALL_PORT) -> Record:
    """The call the vCPU just made: its record, read at CS base + RIP, with the named registers."""
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    rip = sregs.cs.base + regs.rip
    out = bytes((_OUT_IMM8, port))
    at = next((a for a in (rip, rip - 2) if _read(memory, a, 2) == out), None)
    if at is None:
        return BadCall(rip, f"no `out %al, ${port:#x}` at {rip:#x} or just before it")
    wide = 4 if sregs.cs.db or sregs.cs.l else 2  # a near jump's displacement in this code size
    jump = _read(memory, at + 2, 1 + wide)
    if jump[:1] == b"\xeb":
        start, length = at + 4, int.from_bytes(jump[1:2], "little", signed=True)
    elif jump[:1] == b"\xe9":
        start, length = at + 3 + wide, int.from_bytes(jump[1:], "little", signed=True)
    else:
        return BadCall(at, "the OUT is not followed by a jump over a ucall record")
    record = _read(memory, start, length) if 7 < length <= _MAX_RECORD else b""
    if record[:2] != _MAGIC or record.count(b"\0", 7) < 3:
        return BadCall(at, "no ucall record after the OUT")
    command, value = record[2], int.from_bytes(record[3:7], "little")
    names, text, file = (s.decode("utf-8", "replace") for s in record[7:].split(b"\0")[:3])
    try:
        values = [register(regs, name) for name in re.split(r"[\s,]+", names) if name]
        if command == Command.SYNC:
            return Sync(value, tuple(values))
        if command == Command.DONE:
            return Done()
        message = printf(text, values, lambda addr: _string(memory, sregs.ds.base + addr))
    except ValueError as err:
        return BadCall(at, str(err))
    if command == Command.PRINTF:
        return Print(message)
    if command == Command.ABORT:
        return AssertFailed(file, value, message)
    return BadCall(at, f"unknown ucall command {command}")


_GPRS = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
_BYTES = {"al": ("rax", 0), "cl": ("rcx", 0), "dl": ("rdx", 0), "bl": ("rbx", 0),
          "ah": ("rax", 8), "ch": ("rcx", 8), "dh": ("rdx", 8), "bh": ("rbx", 8)}
_EXTENDED = re.compile(r"r(8|9|1[0-5])([dwb]?)")


def register(regs: Any, name: str) -> int:
    """The value of a register named as in assembly (``%eax``, ``bx``, ``dl``, ``r9d``...); ``regs`` is
    a ``struct kvm_regs``."""
    n = name.lstrip("%").lower()
    if n in _BYTES:
        field, shift = _BYTES[n]
        return (int(getattr(regs, field)) >> shift) & 0xFF
    if n in _GPRS:
        return int(getattr(regs, "r" + n)) & 0xFFFF
    if n[:1] in ("e", "r") and n[1:] in _GPRS:
        return int(getattr(regs, "r" + n[1:])) & (0xFFFFFFFF if n[0] == "e" else (1 << 64) - 1)
    match = _EXTENDED.fullmatch(n)
    if match:
        mask = {"": (1 << 64) - 1, "d": 0xFFFFFFFF, "w": 0xFFFF, "b": 0xFF}[match[2]]
        return int(getattr(regs, "r" + match[1])) & mask
    raise ValueError(f"unknown register {name!r} in a ucall")


_CONVERSION = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d+))?(hh|h|ll|l)?([diouxXcs%])")
_BITS = {"hh": 8, "h": 16, None: 32, "l": 64, "ll": 64}


def printf(fmt: str, args: list[int], read_string: Callable[[int], str]) -> str:
    """C printf of integer ``args`` (32-bit unless h/hh/l): %d %i %u %x %X %o %c %s %%."""
    values = iter(args)

    def convert(m: re.Match[str]) -> str:
        flags, width, precision, size, kind = m.groups()
        if kind == "%":
            return "%"
        value = next(values, None)
        if value is None:
            return f"<missing %{kind}>"
        bits = _BITS[size]
        value &= (1 << bits) - 1
        spec = f"%{flags}{width}" + (f".{precision}" if precision else "")
        if kind in "di" and value >> (bits - 1):
            value -= 1 << bits
        if kind == "c":
            return (spec + "c") % chr(value & 0xFF)
        if kind == "s":
            return (spec + "s") % read_string(value)
        return (spec + ("d" if kind in "diu" else kind)) % value

    return _CONVERSION.sub(convert, fmt)


def _read(memory: AddressSpace, addr: int, size: int) -> bytes:
    """Guest memory, or b"" where a hostile record points outside it."""
    try:
        data, result = memory.read(addr, size)
    except MemApiError:
        return b""
    return data if result == MemTxResult.OK else b""


def _string(memory: AddressSpace, addr: int) -> str:
    data = _read(memory, addr, _MAX_STRING)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")
