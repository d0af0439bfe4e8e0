"""Bad guests and bad arguments through the real CLI (`python -m kvmshim`, a subprocess each): a
`kvmshim: error:` line on stderr naming the problem, nothing on stdout, exit status 125 (kvmshim's
own, never a guest's), never a traceback. Only a failing tool adds lines: its whole output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmshim.errors import EXIT_ERROR

FLAT = "# kvmshim: kind=flat\n.code16\n.text\n.globl _start\n_start:\n"
FILES = {
    "garbage.bin": b"\x7fELF\xff\xfe\x00\x89PNG\r\n" + bytes(range(256)),
    "sector.img": b"\xf4".ljust(510, b"\0") + b"\x55\xaa",
    "tiny.com": b"\xcd\x20",
    "hostile-broken.S": FLAT + "    movx %ax, %bx\n",
    "hostile-oversized.S": FLAT + "    .fill 0x7001, 1, 0x90\n",
    "hostile-small-bios.S": "# kvmshim: kind=bios\n.code16\n.text\n    hlt\n",
    "hostile-bad-kind.S": "# kvmshim: kind=weird\n.code16\n",
    "hostile-triple-fault.S": FLAT + "    cli\n    lidt idt\n    mov %cr0, %eax\n    or $1, %eax\n    mov %eax, %cr0\n"
                             "    int $3\nidt: .word 0\n    .long 0\n",
    "hostile-spin.S": FLAT + "    jmp _start\n",
    "hostile-unassigned.S": FLAT + "    inb $0x80, %al\n    hlt\n",
}
# (argv with {dir} for the files' directory, what the first line must say, needs /dev/kvm)
CASES = {
    "missing guest file": (["run", "{dir}/missing.S"], "cannot read guest source", True),
    "missing NASM file": (["run", "{dir}/missing.asm"], "cannot read guest source", True),
    "guest is a directory": (["run", "{dir}"], "Is a directory", True),
    "unknown guest name": (["mtree", "no-such-guest"], "no bundled guest of that name (bundled: bios, doorbell, hello",
                           True),
    "garbage binary": (["run", "{dir}/garbage.bin"], "garbage.bin: not a loadable ELF executable: class 255", True),
    "source that fails to assemble": (["run", "{dir}/hostile-broken.S"],
                                      "as failed on hostile-broken.S (exit 1): {dir}/hostile-broken.S:6: Error: no "
                                      "such instruction: `movx %ax,%bx'", True),
    "oversized flat image": (["run", "{dir}/hostile-oversized.S"], "flat image is 0x7001 bytes, limit 0x7000", True),
    "bios image not 64 KiB": (["run", "{dir}/hostile-small-bios.S"], "must be 0x10000", True),
    "unknown kind header": (["run", "{dir}/hostile-bad-kind.S"], "first line must be '# kvmshim: kind=flat'", True),
    "RAM too small for a flat guest": (["run", "hello", "-m", "16k"], "hello.S: flat guests need at least 32 KiB of "
                                       "RAM here (", True),
    "RAM too small for a .COM": (["run", "{dir}/tiny.com", "-m", "64k"], "tiny.com: DOS .COM guests need at least "
                                 "68 KiB", True),
    "load address for a boot sector": (["run", "{dir}/sector.img", "--load", "0x8000"],
                                       "a load address applies to flat images; a boot sector", True),
    "--initrd for a flat guest": (["run", "hello", "--initrd", "{dir}/garbage.bin"],
                                  "hello.S: modules (--initrd) apply to multiboot kernels; this is a flat guest", True),
    "--initrd file missing": (["run", "hello", "--initrd", "{dir}/missing.img x=1"],
                              "--initrd: cannot read '{dir}/missing.img': No such file", True),
    "guest triple-faults": (["run", "{dir}/hostile-triple-fault.S"], "at cs:ip=", True),
    "guest loops past --timeout": (["run", "{dir}/hostile-spin.S", "--timeout", "0.3"], "ran past its timeout", True),
    "unassigned port with --strict": (["run", "--strict", "{dir}/hostile-unassigned.S"],
                                      "1-byte read from unassigned port 0x80 (address space 'I/O')", True),
    "RAM beyond the host": (["run", "hello", "-m", "1000000G"], "RAM block 'ram': cannot map", True),
    "RAM beyond 2**64": (["run", "hello", "-m", "0x10000000000000000"], "RAM block 'ram': cannot map", True),
    "RAM not a multiple of 4 KiB": (["run", "hello", "-m", "5"], "run: argument -m/--ram: size '5' must be a "
                                    "positive multiple of 4 KiB", False),
    "RAM not a size": (["run", "hello", "-m", "lots"], "not a size: 'lots'", False),
    "negative timeout": (["run", "hello", "--timeout", "-1"], "'-1' must be positive", False),
    "timeout not a number": (["run", "hello", "--timeout", "soon"], "not a number: 'soon'", False),
    "entry point not SEG:OFF": (["run", "hello", "--entry", "10000:0"], "not an entry point: '10000:0'", False),
    "unknown debug-exit convention": (["run", "hello", "--debug-exit", "dos"], "invalid choice: 'dos'", False),
    "no guest": (["run"], "a guest is required", False),
    "a guest for --machine pc": (["run", "--machine", "pc", "hello"], "--machine pc boots its own firmware: drop "
                                 "hello (for the test machine)", False),
    "unknown subcommand": (["boot"], "invalid choice: 'boot'", False),
    "unknown option": (["run", "hello", "--turbo"], "unrecognized arguments: --turbo", False),
    "BIOS file not 64 KiB": (["run", "--machine", "pc", "--bios", "{dir}/garbage.bin"],
                             "not a positive multiple of 64 KiB", False),
    "zero pages to sweep": (["dirty-demo", "sweeper", "--count", "0"], "dirty-demo: argument --count: '0' must be "
                            "positive", False),
    "trace of a missing program": (["trace", "--", "{dir}/missing"], "cannot run", False),
}
#: The cases whose error is a tool's: its whole output follows the line that names the cause.
TOOL_OUTPUT = {"source that fails to assemble": [
    "{dir}/hostile-broken.S: Assembler messages:",
    "{dir}/hostile-broken.S:6: Error: no such instruction: `movx %ax,%bx'"]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    for name, content in FILES.items():
        path = directory / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return directory


@pytest.mark.parametrize("case", [pytest.param(name, marks=pytest.mark.kvm if kvm else ()) for name, (_, _, kvm)
                                  in CASES.items()])
def test_bad_input_gives_an_error_line_and_status_125(case, inputs):
    argv, phrase, _ = CASES[case]
    done = subprocess.run([sys.executable, "-m", "kvmshim", *(a.format(dir=inputs) for a in argv)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_ERROR, done.stderr
    assert done.stdout == ""
    first, *rest = done.stderr.splitlines()
    assert first.startswith("kvmshim: error: ") and phrase.format(dir=inputs) in first, first
    if case in TOOL_OUTPUT:
        assert rest == [line.format(dir=inputs) for line in TOOL_OUTPUT[case]], done.stderr
    else:
        assert rest == [], done.stderr
