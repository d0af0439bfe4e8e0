"""kvmshim's pytest plugin: fixtures and markers for integration tests on real /dev/kvm.

Active once kvmshim is installed (the ``pytest11`` entry point ``kvmshim``; ``-p no:kvmshim``
turns it off). docs/testing.md shows a test file end to end.

Markers:

* ``@pytest.mark.kvm``: the test needs /dev/kvm. It is skipped, with the reason, only when
  /dev/kvm cannot be opened; the fixtures below that make KVM objects imply it.
* ``@pytest.mark.requires_cap("IRQFD", "KVM_CAP_DIRTY_LOG_RING", Cap.COALESCED_PIO, ...)``: skipped
  unless KVM_CHECK_EXTENSION on /dev/kvm offers each capability (implies ``kvm``); a name that is
  no capability of linux/kvm.h stops the run.
* ``@pytest.mark.machine_options(ram_size=..., vcpus=2, ...)``: what ``kvm_machine`` and
  ``kvm_bare_machine`` pass to their machine's constructor.

Fixtures:

* ``kvm_vm``: a fresh ``kvm.Vm``, closed after the test.
* ``kvm_machine``: a ``kvmshim.Machine`` (RAM, serial, debug-exit, ucall and the test devices),
  closed after the test; a KVM fd the test leaves open fails it.
* ``kvm_bare_machine``: a ``kvmshim.BareMachine`` (RAM only), likewise.
* ``guest_asm(source, syntax="gas"|"nasm", kind="flat"|"boot"|"pm32")``: builds an inline guest
  and returns the path ``load()`` takes (docs/testing.md lists what the prelude provides).
* ``kvm_trace(argv, timeout=60)``: runs a command under kvmshim's tracer and returns its decoded
  ``IoctlEvent``s.

A guest ASSERT that fails (``GuestAssertionError``) fails the test with the guest's file and line,
and the report shows that line of the guest's source.
"""
from __future__ import annotations

import functools
import gc
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kvm import Cap, Vm
    from kvmshim.machine import BareMachine, Machine
    from kvmshim.trace import IoctlEvent

#: The fixtures that open /dev/kvm: a test using one is skipped as a ``kvm`` test would be.
KVM_FIXTURES = ("kvm_vm", "kvm_machine", "kvm_bare_machine")
TRACE_TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kvm: needs /dev/kvm (skipped, with the reason, only when it cannot be opened)")
    config.addinivalue_line("markers", "requires_cap(*caps): needs these KVM capabilities (names as in "
                                       "kvm.Cap, with or without KVM_CAP_); implies kvm")
    config.addinivalue_line("markers", "machine_options(**options): constructor options of kvm_machine and "
                                       "kvm_bare_machine")


# ---------------------------------------------------------------- /dev/kvm and capabilities
@functools.cache
def kvm_unavailable(path: str = "/dev/kvm") -> str:
    """Why ``path`` cannot be opened, or "" when it can."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as err:
        return f"{path} cannot be opened: {err.strerror}"
    return ""


@functools.cache
def _extension(cap: int) -> int:
    from kvm import Kvm

    with Kvm() as kvm:
        return kvm.check_extension(cap)


def capability(cap: str | int) -> Cap:
    """A ``kvm.Cap`` from ``"IRQFD"``, ``"KVM_CAP_IRQFD"``, ``Cap.IRQFD`` or its number; a name that is
    no KVM_CAP_* of linux/kvm.h stops the run, so a typo never passes for a missing capability."""
    from kvm import Cap

    if isinstance(cap, str):
        name = cap.upper().removeprefix("KVM_CAP_")
        if name not in Cap.__members__:
            raise pytest.UsageError(f"requires_cap: {cap!r} is not a KVM_CAP_* of linux/kvm.h")
        return Cap[name]
    return Cap(cap)


def skip_reason(item: pytest.Item) -> str:
    """Why ``item`` cannot run here ("" if it can): /dev/kvm, then each capability it requires."""
    caps = [capability(cap) for mark in item.iter_markers("requires_cap") for cap in mark.args]
    needs_kvm = (item.get_closest_marker("kvm") is not None or bool(caps)
                 or any(name in KVM_FIXTURES for name in getattr(item, "fixturenames", ())))
    if not needs_kvm or kvm_unavailable():
        return kvm_unavailable() if needs_kvm else ""
    missing = [f"KVM_CAP_{cap.name}" for cap in caps if not _extension(cap)]
    return f"this kernel's KVM does not offer {', '.join(missing)}" if missing else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = skip_reason(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------- KVM objects
def is_kvm_path(path: str) -> bool:
    """/dev/kvm, or one of the anon inodes KVM hands out (kvm-vm, kvm-vcpu:N, ...)."""
    return path == "/dev/kvm" or path.startswith("anon_inode:kvm")


def kvm_fds() -> dict[int, str]:
    """This process's KVM fds: {fd: /proc/self/fd link} for /dev/kvm and anon_inode:kvm-*."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used
            continue
        if is_kvm_path(link):
            fds[int(name)] = link
    return fds


@pytest.fixture
def kvm_vm() -> Iterator[Vm]:
    """A fresh VM (no memslots, no vCPUs), closed after the test."""
    from kvm import Kvm

    with Kvm() as kvm, kvm.create_vm() as vm:
        yield vm


def _machine(request: pytest.FixtureRequest, cls: type) -> Iterator[Any]:
    mark = request.node.get_closest_marker("machine_options")
    before = kvm_fds()
    machine = cls(**(mark.kwargs if mark else {}))
    try:
        yield machine
    finally:
        machine.close()
    gc.collect()  # what the test dropped without closing goes now, as it would at its next collection
    left = {fd: link for fd, link in kvm_fds().items() if before.get(fd) != link}
    assert not left, f"the test left KVM fds open: {', '.join(f'{fd} -> {link}' for fd, link in left.items())}"


@pytest.fixture
def kvm_machine(request: pytest.FixtureRequest) -> Iterator[Machine]:
    """A test Machine (``@pytest.mark.machine_options(...)`` for its options), closed after the test;
    a KVM fd left open by the test fails it."""
    from kvmshim.machine import Machine

    yield from _machine(request, Machine)


@pytest.fixture
def kvm_bare_machine(request: pytest.FixtureRequest) -> Iterator[BareMachine]:
    """A BareMachine (RAM at 0, nothing else), closed after the test, fds checked as kvm_machine's."""
    from kvmshim.machine import BareMachine

    yield from _machine(request, BareMachine)


# ---------------------------------------------------------------- inline guests
# Each prelude ends where the test's source begins; "#line 1" / "%line 0+1" make the guest's
# line numbers (ASSERT records, assembler errors) count from the first line of that source.
_GAS = {
    "flat": ('#include "ucall.inc"\n.include "common.inc"\n.code16\n.text\n.globl _start\n_start:\n', ""),
    "boot": ('# kvmshim: kind=boot\n#include "ucall.inc"\n.include "common.inc"\n.code16\n.text\n'
             ".globl _start\n_start:\n", "\n.org 510\n.byte 0x55, 0xaa\n"),
    "pm32": ('#include "ucall.inc"\n.include "common.inc"\n.include "pm32.inc"\n.code16\n.text\n'
             ".globl _start\n_start:\n    ENTER_PM32 kvmshim_pm32\nkvmshim_pm32:\n", "\nPM32_GDT\n"),
}
_NASM_HEAD = '%include "ucall-nasm.inc"\n%include "common-nasm.inc"\n'
_NASM = {
    "flat": (f"bits 16\norg 0x1000\n{_NASM_HEAD}", ""),
    "boot": (f"bits 16\norg 0x7c00\n{_NASM_HEAD}", "\ntimes 510 - ($ - $$) db 0\ndw 0xaa55\n"),
    # pm32.inc's ENTER_PM32 and PM32_GDT in NASM syntax
    "pm32": (f"bits 16\norg 0x1000\n{_NASM_HEAD}    cli\n    lgdt [kvmshim_gdtr]\n    mov eax, cr0\n"
             "    or al, 1\n    mov cr0, eax\n    jmp dword 0x08:kvmshim_pm32\nbits 32\nkvmshim_pm32:\n"
             "    mov ax, 0x10\n    mov ds, ax\n    mov es, ax\n    mov ss, ax\n",
             "\nalign 8\nkvmshim_gdt: dq 0, 0x00cf9b000000ffff, 0x00cf93000000ffff\n"
             "kvmshim_gdtr: dw $ - kvmshim_gdt - 1\n    dd kvmshim_gdt\n"),
}
SYNTAXES = {"gas": (_GAS, ".S", "#line 1\n"), "nasm": (_NASM, ".asm", "%line 0+1\n")}


def write_guest(directory: Path, name: str, source: str, syntax: str = "gas", kind: str = "flat") -> Path:
    """Write ``source`` after the prelude of ``syntax`` and ``kind`` into ``directory/NAME.S`` (or
    ``.asm``), build it, and return its path."""
    import guests

    if syntax not in SYNTAXES:
        raise ValueError(f"guest_asm: syntax {syntax!r} (gas or nasm)")
    preludes, suffix, line_one = SYNTAXES[syntax]
    if kind not in preludes:
        raise ValueError(f"guest_asm: kind {kind!r} ({', '.join(preludes)})")
    head, tail = preludes[kind]
    path = directory / f"{name}{suffix}"
    path.write_text(head + line_one + source.strip("\n") + "\n" + tail)
    guests.build(path)  # an assembler error fails the test here, at the lines of ``source``
    return path


@pytest.fixture
def guest_asm(tmp_path: Path) -> Callable[..., Path]:
    """``guest_asm(source, syntax="gas", kind="flat", name=None)`` -> the built guest's path.

    ``source`` is the program after a prelude: ucall and the common macros (PUTS, EXIT, SYNC,
    PRINTF, ASSERT, DONE) included; ``flat``: 16-bit code at 0x1000, ``boot``: a boot sector at
    0x7c00 (padded to 512 bytes with its signature), ``pm32``: 32-bit code in flat protected mode
    at 0x1000 (ESP 0x8000). GNU as code starts at ``_start``."""
    made: list[Path] = []

    def build(source: str, syntax: str = "gas", kind: str = "flat", name: str | None = None) -> Path:
        path = write_guest(tmp_path, name or f"guest{len(made) + 1}", source, syntax, kind)
        made.append(path)
        return path

    return build


# ---------------------------------------------------------------- tracing
def traced_events(argv: str | Sequence[str], timeout: float = TRACE_TIMEOUT,
                  env: dict[str, str] | None = None) -> list[IoctlEvent]:
    """Run ``argv`` under the tracer; the test fails unless it exits with 0 within ``timeout``."""
    from kvmshim.trace import trace

    command = shlex.split(argv) if isinstance(argv, str) else list(argv)
    result = trace(command, env=env, timeout=timeout)
    if result.timed_out:
        pytest.fail(f"{shlex.join(command)} ran past {timeout} s under the tracer", pytrace=False)
    if result.returncode:
        pytest.fail(f"{shlex.join(command)} exited with {result.returncode} under the tracer", pytrace=False)
    return result.events


@pytest.fixture
def kvm_trace() -> Callable[..., list[IoctlEvent]]:
    """``kvm_trace(argv, timeout=60, env=None)`` -> the KVM ioctls the command made, decoded
    (``kvmshim.trace.IoctlEvent``: request, arg, result, exit ...), in the order they returned."""
    return traced_events


# ---------------------------------------------------------------- guest assertions
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    ucall = sys.modules.get("kvmshim.ucall")  # not imported: no guest can have asserted
    error = call.excinfo.value if call.excinfo is not None else None
    if ucall is None or not isinstance(error, ucall.GuestAssertionError):
        return
    outcome.get_result().sections.append(("guest assertion", guest_source_excerpt(error.failed.file,
                                                                                  error.failed.line)))


def guest_source_excerpt(file: str, line: int, context: int = 2) -> str:
    """The lines around ``line`` of a guest source, the failing one marked with ``>``."""
    try:
        lines = Path(file).read_text(errors="replace").splitlines()
    except OSError as err:
        return f"{file}:{line}: (source unreadable: {err.strerror})"
    numbered = _user_lines(lines)
    shown = [(n, text) for n, text in numbered if abs(n - line) <= context]
    width = len(str(line + context))
    return "\n".join([f"{file}:{line}"] + [f"{'>' if n == line else ' '} {n:{width}} | {text}" for n, text in shown])


def _user_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) as the assembler counted them. A ``#line N`` directive (cpp: the next
    line is N) or ``%line N+M`` (NASM: the directive's own line is N) ends an inline guest's
    prelude: the lines before it are left out."""
    out: list[tuple[int, str]] = []
    number = 1
    for text in lines:
        directive = text.split()
        if len(directive) == 2 and directive[0] in ("#line", "%line"):
            first, _, step = directive[1].partition("+")
            out, number = [], int(first) + int(step or 0)
            continue
        out.append((number, text))
        number += 1
    return out
