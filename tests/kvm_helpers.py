"""Helpers for tests on real /dev/kvm: skip only when it cannot be opened, record real ioctls."""
from __future__ import annotations

import os

import pytest

from listeners.kvm_memory import align_section
from memapi import MemoryRegionSection


def _kvm_unavailable() -> str:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError as err:
        return f"/dev/kvm cannot be opened: {err.strerror}"
    return ""


requires_kvm = pytest.mark.skipif(bool(_kvm_unavailable()), reason=_kvm_unavailable() or "kvm available")


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
