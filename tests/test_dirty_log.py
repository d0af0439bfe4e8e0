"""Dirty logging on real KVM in the three modes: GET, GET + CLEAR (manual protect) and the dirty ring.

The invariants of the kernel's dirty_log_test, stop-the-world: the sweeper guest writes the
iteration number into random pages of a 100-page slot (not a multiple of 64) and reads others;
at each tick the host takes the VGA bits while the guest waits on the tick port.
"""
from __future__ import annotations

import ctypes
import mmap

import pytest

import memapi
from kvm import KvmError
from kvmshim.machine import Machine
from kvmshim.tick import TICK_PORT, TickPort
from memapi import DirtyClient, MemoryRegion

pytestmark = pytest.mark.kvm
PAGE = 4096
MODES = {"get": dict(manual_protect=False), "get+clear": dict(), "ring": dict(dirty_ring=1 << 16)}


def sweeper(m: Machine, handler, **params) -> TickPort:
    """Load the sweeper with ``params`` (screen off) and a tick port answered by ``handler``."""
    port = TickPort(handler)
    m.io.add_subregion(TICK_PORT, port.region)
    m.load("sweeper")
    m.set_params("sweeper", SCREEN=0, **params)
    return port


def page_values(mr: MemoryRegion, pages: range) -> list[int]:
    return [int.from_bytes(mr.ram_block.read(p * PAGE, 4), "little") for p in pages]


def dirty_pages(mr: MemoryRegion, client: int = DirtyClient.VGA) -> set[int]:
    return set(memapi.snapshot_and_clear_dirty(mr, 0, mr.size, client).dirty_pages())


@pytest.mark.parametrize("mode", MODES)
def test_dirty_log_invariants(mode):
    pages, first, iterations = 100, 16, 25
    with Machine(ram_size=pages * PAGE, **MODES[mode]) as m:
        assert m.kvm_memory.manual_protect == (mode == "get+clear")
        seen = []

        def tick() -> int:
            it = len(seen)
            if it:
                dirty = dirty_pages(m.ram)
                values = page_values(m.ram, range(pages))
                assert dirty <= set(range(first, pages)), "a page only read or executed was reported"
                assert all(values[p] == it for p in dirty), "a reported page lacks this iteration's value"
                assert all(values[p] < it for p in set(range(first, pages)) - dirty), "a written page was missed"
                seen.append(len(dirty))
            else:
                seen.append(0)
                m.ram.set_log(True)
                assert m.kvm_memory.lookup(0, pages * PAGE).flags & 1
            return 0 if it == iterations else it + 1

        sweeper(m, tick, FIRST=first, COUNT=pages - first, PER_TICK=30, PATTERN=1, READS=30)
        m.run(timeout=60)
        assert m.exit_status == 0 and len(seen) == iterations + 1
        assert all(0 < n < pages - first for n in seen[1:])
        m.ram.set_log(False)


def test_dirty_ring_full_exits_lose_nothing():
    """A 4 KiB ring (256 entries) and 1400 pages per tick: the vCPU exits with DIRTY_RING_FULL and
    the runner reaps; every page still arrives, each once in the bitmap however often it was pushed.
    Logging starts before the guest runs: its code page, only executed, must not show up."""
    pages, first = 1656, 256
    with Machine(ram_size=pages * PAGE, dirty_ring=4096) as m:
        reaps = []

        def reap() -> int:
            reaps.append(m.kvm_memory.reap())
            return reaps[-1]

        m.runner.on_dirty_ring_full = reap
        ticks = iter([1, 2, 0])
        sweeper(m, lambda: next(ticks), FIRST=first, COUNT=pages - first, PER_TICK=pages - first)
        m.ram.set_log(True)
        m.run(timeout=60)
        assert len(reaps) >= 2 * (pages - first) // 256 and all(reaps)
        assert dirty_pages(m.ram) == set(range(first, pages))
        m.ram.set_log(False)


@pytest.mark.parametrize("mode", MODES)
def test_log_stop_and_delete_collect_the_last_bits(mode):
    """Bits the kernel holds when logging stops or the slot goes are handed over, not dropped."""
    with Machine(ram_size=1 << 20, **MODES[mode]) as m:
        ticks = iter([1, 2, 0])
        region = MemoryRegion.ram("extra", 0x40000)

        def tick() -> int:
            value = next(ticks)
            if value == 2:  # the guest has written pages 0xf0-0x10f once
                m.ram.set_log(False)
                m.system.del_subregion(region)
            return value

        sweeper(m, tick, FIRST=0xF0, COUNT=0x20, PER_TICK=0x20)
        m.system.add_subregion_overlap(0x100000, region, 1)
        m.ram.set_log(True)
        region.set_log(True)
        m.run(timeout=60)
        assert dirty_pages(m.ram) == set(range(0xF0, 0x100))  # the RAM ends at 1 MiB, "extra" follows
        assert dirty_pages(region) == set(range(0x10))
        region.set_log(False)
        region.ram_block.close()


def _unwritable_by_the_kernel(nbytes: int):
    """A buffer Python sees as writable but mprotect()ed read-only: KVM_GET_DIRTY_LOG into it
    fails for real, in the kernel's copy_to_user (EFAULT)."""
    buf = mmap.mmap(-1, max(nbytes, mmap.PAGESIZE))
    anchor = (ctypes.c_char * len(buf)).from_buffer(buf)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(ctypes.addressof(anchor)), len(buf), mmap.PROT_READ) == 0
    return memoryview(anchor).cast("B")[:nbytes], (buf, anchor)


@pytest.mark.parametrize("mode", ["get", "get+clear"])
def test_a_failed_fetch_keeps_earlier_bits(mode):
    """A fetch that fails leaves the bits already collected alone and loses none of the kernel's;
    one that fails right before the slot goes marks the whole slot dirty rather than drop bits."""
    with Machine(ram_size=1 << 20, **MODES[mode]) as m:
        region = MemoryRegion.ram("extra", 0x40000)
        m.system.add_subregion_overlap(0x100000, region, 1)
        slot = m.kvm_memory.lookup(0x100000, 0x40000)
        results, ticks = {}, iter(range(1, 5))

        def tick() -> int:
            n = next(ticks)
            if n == 2:  # pages 0-3 written: collect them, then break the next fetch
                m.memory_system.global_dirty_log_sync()
                good, results["keep"] = slot.scratch, _unwritable_by_the_kernel(len(slot.scratch))
                slot.scratch = results["keep"][0]
                with pytest.raises(KvmError, match="EFAULT"):
                    memapi.snapshot_and_clear_dirty(region, 0, region.size, DirtyClient.VGA)
                slot.scratch = good
            elif n == 3:  # pages 4-7 written too: nothing was lost
                results["pages"] = dirty_pages(region)
                slot.scratch = _unwritable_by_the_kernel(len(slot.scratch))[0]
                m.system.del_subregion(region)
                results["deleted"] = dirty_pages(region)
            return 0 if n == 4 else n

        sweeper(m, tick, FIRST=0x100, COUNT=64, PER_TICK=4)
        region.set_log(True)
        m.run(timeout=60)
        assert results["pages"] == set(range(8))
        assert results["deleted"] == set(range(0x40)) and m.kvm_memory.failed_fetches == 1
        region.set_log(False)
        region.ram_block.close()
