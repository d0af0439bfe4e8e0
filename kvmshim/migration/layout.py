"""What a machine migrates, and the state at the stop: its RAM regions, vCPUs, in-kernel chips
and device models; the CONFIG section that describes them, and how a destination checks it.

The destination checks the CONFIG section before it touches anything: the machine kind, the vCPU
count, the in-kernel chips, every RAM region by name and size, and every device section by name
with a version its model accepts. Any difference is a ConfigMismatch (a device it does not have:
UnknownSection), so a wrong destination is refused with its memory and devices as they were.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from memapi import PAGE_SIZE

from . import codec, cpu, vmstate
from .errors import ConfigMismatch, MigrationError, StateError, StreamError, UnknownSection
from .ram import load_pages, ram_regions
from .stream import Kind, Section, StreamWriter

if TYPE_CHECKING:
    from ..base import MachineBase


class MachineLayout:
    """A machine's migration sections. ``devices`` are models the caller mapped itself (beyond what
    the machine's attributes reach), in the same order on both sides."""

    def __init__(self, machine: MachineBase, devices: Iterable[object] = ()) -> None:
        kvm, vm = machine.kvm, machine.vm
        if machine.closed or kvm is None or vm is None:
            raise MigrationError(f"{machine!r} is closed")
        self.machine, self.kvm, self.vm = machine, kvm, vm
        self.regions = ram_regions(machine.memory.root)
        self.devices = dict(vmstate.find_devices(machine, devices))
        self.caps = cpu.StateCaps.of(vm)
        self._msrs: list[int] | None = None

    @property
    def ram_bytes(self) -> int:
        return sum(mr.size for mr in self.regions)

    def config(self, **extra: Any) -> dict[str, Any]:
        """The CONFIG section's contents; ``extra`` is passed along (snapshot ids, the guest's name)."""
        return {"machine": self.machine.name, "vcpus": len(self.machine.vcpus), "page_size": PAGE_SIZE,
                "ram": [[mr.name, mr.size] for mr in self.regions],
                "devices": [[name, vmstate.declared(device).version]
                            for name, device in self.devices.items()],
                "irqchip": self.caps.irqchip, "pit": self.caps.pit, **extra}

    def check(self, config: object) -> dict[str, Any]:
        """Refuse a stream made on another kind of machine, before anything is loaded; returns
        ``config``, known from here on to be a dict."""
        if not isinstance(config, dict):
            raise StreamError("CONFIG section: not a dict", "config")
        mine = self.config()
        try:
            for key in ("machine", "vcpus", "page_size", "irqchip", "pit"):
                if config[key] != mine[key]:
                    raise ConfigMismatch(f"the source has {key} {config[key]!r}, this destination {mine[key]!r}")
            theirs = dict(config["ram"])
            devices = dict(config["devices"])
            if not all(isinstance(name, str) and isinstance(number, int)
                       for name, number in (*theirs.items(), *devices.items())):
                raise TypeError("RAM regions and devices are [name, integer] pairs: a string and a size or version")
        except (KeyError, TypeError, ValueError) as err:
            raise StreamError(f"CONFIG section: {type(err).__name__}: {err}", "config") from err
        ours = {str(mr.name): mr.size for mr in self.regions}
        for name in sorted(theirs.keys() | ours.keys()):
            if theirs.get(name) != ours.get(name):
                raise ConfigMismatch(f"RAM region {name!r}: {_size(theirs.get(name))} on the source, "
                                     f"{_size(ours.get(name))} here")
        for name, version in devices.items():
            device = self.devices.get(name)
            if device is None:
                raise UnknownSection(f"device section {name!r}: this destination has no such device", name)
            vmsd = vmstate.declared(device)
            if not vmsd.accepts(version):
                raise ConfigMismatch(f"device section {name!r}: version {version}, this {type(device).__name__} "
                                     f"loads {vmsd.minimum_version} to {vmsd.version}")
        missing = sorted(self.devices.keys() - devices.keys())
        if missing:
            raise ConfigMismatch(f"device {missing[0]!r} is not in the stream: the source has no such device")
        return config

    # ------------------------------------------------------------ the state at the stop
    def write_state(self, writer: StreamWriter, running: list[bool]) -> None:
        """With the vCPUs settled: VM, then each vCPU (with whether its run loop was running), then each
        device. (A vCPU ioctl waits for the vCPU's KVM_RUN to return, so the MSRs are probed only here.)"""
        machine = self.machine
        if self._msrs is None:
            self._msrs = cpu.saved_msrs(self.kvm, machine.vcpu)
        msrs = self._msrs
        writer.section(Kind.VM, "vm", codec.encode(cpu.save_vm(self.vm, self.caps)))
        for index, vcpu in enumerate(machine.vcpus):
            state = cpu.save_vcpu(vcpu, msrs, self.caps)
            state["running"] = running[index]
            writer.section(Kind.CPU, f"cpu/{index}", codec.encode(state))
        for name, device in self.devices.items():
            try:
                state = vmstate.save(device)
            except TypeError as err:
                raise StateError(f"device section {name!r}: {err}") from err
            writer.section(Kind.DEVICE, name, codec.encode(state))


class StateLoader:
    """The destination's side: applies RAM, VM, CPU and DEVICE sections and knows when all are in."""

    def __init__(self, layout: MachineLayout) -> None:
        self.layout = layout
        self.regions = {str(mr.name): mr for mr in layout.regions}
        self.pages = self.rounds = 0
        self.final = False  # the stop-and-copy round has come: no RAM or ROUND after it
        self.running = [False] * len(layout.machine.vcpus)
        self._wanted = {f"cpu/{i}" for i in range(len(layout.machine.vcpus))} | set(layout.devices) | {"vm"}

    def apply(self, section: Section) -> None:
        kind, name = section.kind, section.name
        if kind in (Kind.RAM, Kind.ROUND) and self.final:
            raise StreamError(f"{section.label} after the final round {self.rounds - 1}", name)
        if kind == Kind.RAM:
            mr = self.regions.get(name)
            if mr is None:
                raise UnknownSection(f"RAM section {name!r}: this destination has no such region", name)
            self.pages += load_pages(mr, section.payload)
        elif kind == Kind.ROUND:
            self._round(section)
        elif kind in (Kind.VM, Kind.CPU, Kind.DEVICE):
            self._state(section)
        else:
            raise StreamError(f"unexpected {section.label} before END", name)

    def _round(self, section: Section) -> None:
        """Rounds come in order, so a stream with a round cut out (or two spliced) is refused."""
        try:
            fields = codec.decode(section.payload)
        except codec.CodecError as err:
            raise StreamError(f"{section.label}: {err}", section.name) from err
        index, final = (fields.get("index"), fields.get("final")) if isinstance(fields, dict) else (None, None)
        if type(index) is not int or type(final) is not bool:
            raise StreamError(f"{section.label}: not {{'index': int, 'final': bool}}", section.name)
        if index != self.rounds:
            raise StreamError(f"{section.label}: round {index} where round {self.rounds} was expected (rounds "
                              "missing or out of order: a spliced stream)", section.name)
        self.rounds, self.final = index + 1, final

    def _state(self, section: Section) -> None:
        name = section.name
        if name not in self._wanted:
            raise UnknownSection(f"{section.label}: no such section here, or a second one", name)
        self._wanted.discard(name)
        try:
            state = codec.decode(section.payload)
        except codec.CodecError as err:
            raise StreamError(f"{section.label}: {err}", name) from err
        machine = self.layout.machine
        if section.kind == Kind.VM:
            cpu.load_vm(self.layout.vm, state, section.label)
        elif section.kind == Kind.CPU:
            index = int(name.split("/")[1])
            if not isinstance(state, dict):
                raise StateError(f"{section.label}: not a dict")
            running = state.pop("running", False)
            cpu.load_vcpu(machine.vcpus[index], state, self.layout.caps, section.label)
            self.running[index] = bool(running)
        else:
            try:
                with machine.memory_system.transaction():
                    vmstate.load(self.layout.devices[name], state, name)
            except (TypeError, ValueError, KeyError, IndexError) as err:
                raise StateError(f"{section.label}: {err}") from err

    def finish(self, section: Section) -> None:
        """At END: every state section must have come, and the final round if there were rounds (a
        snapshot has none)."""
        if self.rounds and not self.final:
            raise StreamError(f"END after round {self.rounds - 1}, which is not the final one: the stop-and-copy "
                              "round is missing", section.name)
        if self._wanted:
            raise StreamError(f"END before section {sorted(self._wanted)[0]!r}", section.name)


def _size(size: int | None) -> str:
    return "absent" if size is None else f"{size:#x} bytes"
