"""What this process holds, for leak tests: fds, mappings, threads and RSS (psutil), KVM ones by name.

Counts are compared after a warm-up, since the first machine loads modules and grows
Python's allocator; mappings get a small tolerance (the allocator's arenas come and go),
while fds, threads and anything KVM must come back exactly.
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

import psutil

from kvmshim.pytest_plugin import is_kvm_path, kvm_fds

#: Mappings Python's allocator and libc may add or drop between two identical moments.
MAP_SLACK = 8


@dataclass(frozen=True)
class Usage:
    fds: int
    kvm_fds: int  # /dev/kvm and anon_inode:kvm-* fds
    maps: int
    kvm_maps: int  # mappings of KVM fds (kvm_run pages, dirty rings)
    threads: int
    rss: int
    vms: int

    @property
    def rss_mib(self) -> float:
        return self.rss / (1 << 20)


def usage() -> Usage:
    """A snapshot after a full garbage collection."""
    gc.collect()
    proc = psutil.Process()
    maps = proc.memory_maps(grouped=False)
    memory = proc.memory_info()
    return Usage(proc.num_fds(), len(kvm_fds()), len(maps), sum(is_kvm_path(m.path) for m in maps),
                 threading.active_count(), memory.rss, memory.vms)


def assert_no_leak(before: Usage, after: Usage) -> None:
    """Same fds and threads, no KVM fd or mapping left, mappings within MAP_SLACK."""
    assert (after.fds, after.kvm_fds, after.kvm_maps, after.threads) == (
        before.fds, before.kvm_fds, before.kvm_maps, before.threads), f"{before} -> {after}"
    assert abs(after.maps - before.maps) <= MAP_SLACK, f"mappings {before.maps} -> {after.maps}"
