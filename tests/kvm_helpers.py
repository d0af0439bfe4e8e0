"""Project-only helpers for tests on real /dev/kvm: record real ioctls, the slots a FlatView needs.
(Tests that need /dev/kvm carry the kvmshim pytest plugin's ``kvm`` marker.)"""
from __future__ import annotations

from listeners.kvm_memory import align_section
from memapi import MemoryRegionSection


def record_slot_ioctls(vm) -> list:
    """Wrap vm.set_user_memory_region so each real call is also logged as (slot, gpa, size, flags)."""
    calls: list = []
    real = vm.set_user_memory_region

    def recording(slot, gpa, size, uaddr, flags=0):
        calls.append((slot, gpa, size, flags))
        return real(slot, gpa, size, uaddr, flags)

    vm.set_user_memory_region = recording
    return calls


def expected_slots(space, readonly_allowed: bool = True) -> list[tuple[int, int, int]]:
    """(gpa, size, readonly flag) of the page-aligned RAM/ROMD part of the current FlatView."""
    out = []
    for fr in space.current_map:
        mr = fr.mr
        if not (mr.is_ram or mr.is_romd):
            continue
        gpa, size = align_section(MemoryRegionSection.of(fr, None))
        if size and not (fr.offset_in_region - fr.start) % 4096:  # KVM needs a page-aligned host address
            ro = 2 if (fr.readonly or mr.readonly or mr.is_romd) and readonly_allowed else 0
            out.append((gpa, size, ro))
    return out
