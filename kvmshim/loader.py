"""Apply a guest's load plan to a machine: check it fits the RAM, write its segments through the
memory AddressSpace, map its ROM, and put every vCPU into its entry state.

Works on any machine with a ``memory`` AddressSpace and a ``vcpus`` list. Nothing is written
unless the whole plan fits, so a guest too big for its RAM fails with one GuestLoadError.
A guest run by several vCPUs tells them apart by EBX: vCPU n > 0 starts with EBX = n.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import guests
from guests import GuestLoadError, LoadPlan, MemoryRange, Module, Rom, Segment
from guests.formats import EntryPoint
from guests.plans import merged_ram
from kvm import Vcpu
from memapi import AddressSpace, MemoryRegion, MemTxResult

from . import cpu_state

_CHUNK = 1 << 20  # zero-fill in pieces, so a large bss never needs one large buffer


class Loadable(Protocol):
    memory: AddressSpace
    vcpus: list[Vcpu]


def memory_map(machine: Loadable) -> list[MemoryRange]:
    """The machine's RAM as its memory FlatView shows it: writable RAM ranges, adjacent ones joined
    (a device or ROM mapped over RAM leaves a hole)."""
    return merged_ram(MemoryRange(r.start, r.end - r.start) for r in machine.memory.flatview.ranges
                      if r.mr.is_ram and not r.readonly and not r.mr.is_rom and not r.mr.is_ram_device)


def load(machine: Loadable, guest: str | Path, *, load: int | None = None,
         entry: EntryPoint | None = None, cmdline: str = "", modules: Sequence[Module] = (),
         services: bool = True) -> LoadPlan:
    """Build ``guest`` if needed, plan it for this machine's RAM and apply the plan (see guests.plan)."""
    layout = memory_map(machine)
    plan = guests.plan(guest, load=load, entry=entry, cmdline=cmdline, modules=modules, memory_map=layout,
                       services=services)
    apply(machine, plan, layout)
    return plan


def apply(machine: Loadable, plan: LoadPlan, layout: Sequence[MemoryRange] | None = None,
          vcpus: Sequence[Vcpu] | None = None) -> None:
    """Check ``plan`` against the machine's RAM (``layout``, default: read from the machine), then
    write it and enter ``vcpus`` (default: every vCPU)."""
    plan.check(memory_map(machine) if layout is None else layout)
    for segment in plan.segments:
        _write(machine.memory, segment, plan.name)
    if plan.rom is not None:
        _map_rom(machine.memory, plan.rom)
    for index, vcpu in enumerate(machine.vcpus if vcpus is None else vcpus):
        cpu_state.enter(vcpu, plan.entry, {"rbx": index} if index else {})


def _write(memory: AddressSpace, segment: Segment, name: str) -> None:
    results = [memory.write(segment.gpa, segment.data)] if segment.data else []
    for offset in range(0, segment.zeros, _CHUNK):
        size = min(_CHUNK, segment.zeros - offset)
        results.append(memory.write(segment.gpa + len(segment.data) + offset, bytes(size)))
    if any(result != MemTxResult.OK for result in results):
        raise GuestLoadError(f"{name}: writing {segment.describe()} failed")


def _map_rom(memory: AddressSpace, rom: Rom) -> None:
    """The image as a ROM region at ``rom.gpa`` in the memory root and, if asked, a readonly alias of
    its last 64 KiB at ``rom.alias_gpa`` over whatever is there (QEMU's isa-bios, priority 1)."""
    region = MemoryRegion.rom(rom.name, len(rom.data), rom.data)
    memory.root.add_subregion(rom.gpa, region)
    if rom.alias_gpa is not None:
        size = min(len(rom.data), 0x10000)
        alias = MemoryRegion.alias(f"isa-{rom.name}", region, len(rom.data) - size, size)
        alias.set_readonly(True)
        memory.root.add_subregion_overlap(rom.alias_gpa, alias, 1)
