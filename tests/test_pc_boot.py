"""The pc machine boots Debian's SeaBIOS on real KVM.

One boot (the `boot` fixture) records everything: the debug console, the memslots
before and after and every slot ioctl in between, the maps before and after POST, and
a guest write into the shadowed BIOS. The machine is closed before any test runs (the
suite's clean_core fixture unregisters listeners after every test). The maps are compared
with QEMU 7.2's own: tests/data/oracle/pc-128m.* (stopped before the firmware ran) and
tests/data/pc_after_post.* (after SeaBIOS ran; how: pc_after_post.cmd), range by range
for the regions we model.
"""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvm_helpers import record_slot_ioctls
from kvmshim.pc.machine import PcMachine

pytestmark = pytest.mark.kvm  # and Debian's SeaBIOS, which make test installs

DATA = Path(__file__).parent / "data"
RO = 2  # KVM_MEM_READONLY
SHADOW = (0xC0000, 0x100000)
#: Regions of QEMU's pc that we do not model (in-kernel or absent devices, the TPR-patching vAPIC's ROM).
UNMODELLED = {"ioapic", "hpet", "apic-msi", "kvmvapic-rom"}
#: I/O regions we model at QEMU's ports.
IO_MODELLED = {"rtc-index", "rtc", "fwcfg", "pci-conf-idx", "piix3-reset-control", "pci-conf-data"}
#: Real mode at 0:7c00: read f000:0000, write its complement, read it back, OUT it to port 0x80, spin.
ROM_WRITE = bytes.fromhex("b800f0 8ed8 a00000 f6d0 a20000 a00000 e680 ebfe")
PROBE_PORT = 0x80

_TREE = re.compile(r" +(?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) \(prio -?\d+, [^)]+\): "
                   r"(?:alias )?(?P<name>\S+)")
_FLAT = re.compile(r"  (?P<start>[0-9a-f]{16})-(?P<end>[0-9a-f]{16}) \(prio (?P<prio>-?\d+), (?P<kind>[^)]+)\): "
                   r"(?P<name>\S+)(?: @(?P<offset>[0-9a-f]{16}))?(?: KVM)*")


@dataclass
class Boot:
    log: bytes
    reason: str
    slots_before: list
    slots_after: list
    ioctls: list
    before: dict[str, str]  # view -> `info mtree` text
    after: str  # `info mtree`
    rom_byte: int
    read_back: int | None
    exits: list
    rom_after: int  # the byte at 0xf0000 in RAM after the guest's write


def _maps(machine: PcMachine) -> dict[str, str]:
    return {"tree": machine.mtree(), "treeD": machine.mtree(disabled=True), "flat": machine.mtree(flatview=True)}


def _write_shadowed_bios(m: PcMachine) -> tuple[int, int | None, list]:
    """Run ROM_WRITE after POST: (byte at 0xf0000 before, byte the guest read back, exits traced)."""
    rom_byte = m.memory.read(0xF0000, 1)[0][0]
    m.memory.write(0x7C00, ROM_WRITE)
    exits: list = []

    def on_exit(kind: str, addr: int, value: int, size: int, is_write: bool) -> None:
        exits.append((kind, addr, value, size, is_write))
        if (kind, addr) == ("pio", PROBE_PORT):
            m.runner.stop()

    m.vcpu.immediate_exit = True
    m.vcpu.run()  # completes the exit the boot stopped in (KVM_RUN with immediate_exit)
    m.vcpu.set_real_mode(0, 0x7C00)
    m.runner.on_exit = on_exit
    m.runner.run(timeout=10)
    return rom_byte, next((e[2] for e in exits if e[:2] == ("pio", PROBE_PORT)), None), exits


@pytest.fixture(scope="module")
def boot() -> Boot:
    with PcMachine(stop_at_post_end=True) as m:
        before, slots_before = _maps(m), m.kvm_memory.slot_table()
        ioctls = record_slot_ioctls(m.vm)
        outcome = m.boot(timeout=60)
        after, slots_after = m.mtree(), m.kvm_memory.slot_table()
        rom_byte, read_back, exits = _write_shadowed_bios(m)
        return Boot(m.log, outcome.reason, slots_before, slots_after, ioctls, before, after, rom_byte, read_back,
                    exits, m.memory.read(0xF0000, 1)[0][0])


@pytest.fixture(scope="module")
def cli() -> Iterator[dict[str, subprocess.Popen]]:
    """`kvmshim run --machine pc` and `kvmshim mtree --machine pc -f`, started together."""
    commands = {"run": ["run", "--machine", "pc"], "mtree": ["mtree", "--machine", "pc", "-f"]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "kvmshim.cli", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for name, args in commands.items()}
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.communicate()


def finished(proc: subprocess.Popen) -> tuple[int, bytes, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err.decode()


# ------------------------------------------------------------------ reading `info mtree` text
def memory_tree(text: str) -> list[str]:
    """The region lines of the `memory` address space's tree, without the regions we do not model."""
    block = next(b for b in text.split("\n\n") if "address-space: memory\n" in b + "\n")
    return [line for line in block.splitlines()
            if not line.startswith("address-space:") and _TREE.match(line)["name"] not in UNMODELLED]


def unmodelled_spans(tree_text: str) -> list[tuple[int, int]]:
    """[start, end) of every unmodelled region in the `memory` tree."""
    block = next(b for b in tree_text.split("\n\n") if "address-space: memory\n" in b + "\n")
    matches = (_TREE.match(line) for line in block.splitlines() if not line.startswith("address-space:"))
    return [(int(m["start"], 16), int(m["end"], 16) + 1) for m in matches if m["name"] in UNMODELLED]


def flat_ranges(text: str, space: str) -> list[tuple[int, int, tuple]]:
    """(start, end, (prio, kind, name, offset at start)) of the FlatView that AS ``space`` renders."""
    block = next(b for b in text.split("\n\n") if f' AS "{space}", root:' in b)
    out = []
    for line in block.splitlines():
        if line.startswith("  "):  # a range (the header lines have one leading space)
            m = _FLAT.fullmatch(line)
            out.append((int(m["start"], 16), int(m["end"], 16) + 1,
                        (int(m["prio"]), m["kind"], m["name"], int(m["offset"] or "0", 16))))
    assert out, f"no ranges for {space!r}"
    return out


def _at(ranges: list, addr: int) -> tuple | None:
    for start, end, (prio, kind, name, offset) in ranges:
        if start <= addr < end:
            return prio, kind, name, offset + addr - start
    return None


def flat_differences(reference: list, ours: list, masked: list[tuple[int, int]]) -> list[str]:
    """Address spans (outside ``masked``) where the two FlatViews map something different."""
    cuts = sorted({a for start, end, _ in reference + ours for a in (start, end)} | {a for s in masked for a in s})
    return [f"{a:#x}-{b - 1:#x}: QEMU {_at(reference, a)}, ours {_at(ours, a)}" for a, b in itertools.pairwise(cuts)
            if not any(s <= a < e for s, e in masked) and _at(reference, a) != _at(ours, a)]


def _in_shadow(gpa: int, size: int) -> bool:
    return gpa < SHADOW[1] and SHADOW[0] < gpa + size


def _oracle(view: str) -> str:
    return (DATA / "oracle" / f"pc-128m.{view}.txt").read_text()


# ------------------------------------------------------------------ the boot
def test_seabios_prints_its_banner_and_no_bootable_device(boot):
    assert boot.log.startswith(b"SeaBIOS (version ")
    for line in (b"Running on QEMU (i440fx)", b"Found QEMU fw_cfg",
                 b"qemu/e820: addr 0x0000000000000000 len 0x0000000008000000 [RAM]"):
        assert line in boot.log
    assert boot.log.endswith(b"No bootable device.  Retrying in 60 seconds.\n")
    assert boot.reason == "stopped"


def test_pam_programming_shows_in_the_memslots(boot):
    shadow_before = [s for s in boot.slots_before if _in_shadow(s[0], s[1])]
    assert shadow_before == [(0xC0000, 0x20000, RO), (0xE0000, 0x20000, RO)]  # pc.rom, isa-bios
    shadow_ioctls = [(gpa, size, flags) for _, gpa, size, flags in boot.ioctls if size == 0 or _in_shadow(gpa, size)]
    # make_bios_writable: every segment becomes pam-ram, one writable slot covers all RAM ...
    assert (0, 0x8000000, 0) in shadow_ioctls
    # ... make_bios_readonly: pam-rom (READONLY slots) below 0xe8000 and at 0xf0000, pam-ram in between.
    final = [(0xC0000, 0x28000, RO), (0xE8000, 0x8000, 0), (0xF0000, 0x10000, RO)]
    assert [s for s in boot.slots_after if _in_shadow(s[0], s[1])] == final
    assert shadow_ioctls.index((0, 0x8000000, 0)) < shadow_ioctls.index((0xF0000, 0x10000, RO))


def test_shadowed_bios_is_readonly_after_post(boot):
    """The write exits (READONLY slot), is dropped, and the guest reads the old byte back."""
    written = boot.rom_byte ^ 0xFF
    assert ("mmio", 0xF0000, written, 1, True) in boot.exits
    assert boot.rom_after == boot.rom_byte
    assert boot.read_back == boot.rom_byte


# ------------------------------------------------------------------ the maps against QEMU 7.2's
@pytest.mark.parametrize("view", ["tree", "treeD"])
def test_tree_before_post_is_qemus(boot, view):
    assert memory_tree(boot.before[view]) == memory_tree(_oracle(view))


def test_flat_view_before_post_is_qemus(boot):
    reference = _oracle("flat")
    masked = unmodelled_spans(_oracle("tree"))
    assert flat_differences(flat_ranges(reference, "memory"), flat_ranges(boot.before["flat"], "memory"), masked) == []


def test_tree_after_post_is_qemus(boot):
    assert memory_tree(boot.after) == memory_tree((DATA / "pc_after_post.tree.txt").read_text())


def test_mtree_command_after_post_matches_qemu(cli):
    status, out, err = finished(cli["mtree"])
    assert status == 0, err
    ours = out.decode()
    reference = (DATA / "pc_after_post.flat.txt").read_text()
    masked = unmodelled_spans((DATA / "pc_after_post.tree.txt").read_text())
    assert flat_differences(flat_ranges(reference, "memory"), flat_ranges(ours, "memory"), masked) == []
    io_lines = [m for m in map(_FLAT.fullmatch, reference.splitlines()) if m and m["name"] in IO_MODELLED]
    assert {m["name"] for m in io_lines} == IO_MODELLED
    assert {m[0] for m in io_lines} <= set(ours.splitlines())


def test_run_command_shows_the_banner(cli):
    status, out, err = finished(cli["run"])
    assert status == 0, err
    assert out.startswith(b"SeaBIOS (version ")
    assert out.endswith(b"No bootable device.  Retrying in 60 seconds.\n")
