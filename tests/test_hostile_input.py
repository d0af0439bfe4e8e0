"""Bad guests and bad arguments through the real CLI (`python -m kvmshim.cli`, a subprocess each):
one line on stderr naming the problem, nothing on stdout, exit status 2, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvm_helpers import requires_kvm

FLAT = "# kvmshim: kind=flat\n.code16\n.text\n.globl _start\n_start:\n"
FILES = {
    "garbage.bin": b"\x7fELF\xff\xfe\x00\x89PNG\r\n" + bytes(range(256)),
    "hostile-broken.S": FLAT + "    movx %ax, %bx\n",
    "hostile-oversized.S": FLAT + "    .fill 0x7001, 1, 0x90\n",
    "hostile-small-bios.S": "# kvmshim: kind=bios\n.code16\n.text\n    hlt\n",
    "hostile-no-header.S": "just some text\n",
    "hostile-triple-fault.S": FLAT + "    cli\n    lidt idt\n    mov %cr0, %eax\n    or $1, %eax\n    mov %eax, %cr0\n"
                             "    int $3\nidt: .word 0\n    .long 0\n",
    "hostile-spin.S": FLAT + "    jmp _start\n",
}
# (argv with {dir} for the files' directory, what the line must say, needs /dev/kvm)
CASES = {
    "missing guest file": (["run", "{dir}/missing.S"], "cannot read guest source", True),
    "guest is a directory": (["run", "{dir}"], "Is a directory", True),
    "unknown guest name": (["mtree", "no-such-guest"], "cannot read guest source", True),
    "garbage binary": (["run", "{dir}/garbage.bin"], "not a guest source (binary data", True),
    "source that fails to assemble": (["run", "{dir}/hostile-broken.S"], "as failed on hostile-broken.S (exit 1): ",
                                      True),
    "oversized flat image": (["run", "{dir}/hostile-oversized.S"], "flat image is 0x7001 bytes, limit 0x7000", True),
    "bios image not 64 KiB": (["run", "{dir}/hostile-small-bios.S"], "must be 0x10000", True),
    "no kind header": (["run", "{dir}/hostile-no-header.S"], "first line must be '# kvmshim: kind=flat'", True),
    "guest triple-faults": (["run", "{dir}/hostile-triple-fault.S"], "at cs:ip=", True),
    "guest loops past --timeout": (["run", "{dir}/hostile-spin.S", "--timeout", "0.3"], "ran past its timeout", True),
    "RAM beyond the host": (["run", "hello", "-m", "1000000G"], "RAM block 'ram': cannot map", True),
    "RAM beyond 2**64": (["run", "hello", "-m", "0x10000000000000000"], "RAM block 'ram': cannot map", True),
    "RAM not a multiple of 4 KiB": (["run", "hello", "-m", "5"], "must be a positive multiple of 4 KiB", False),
    "RAM not a size": (["run", "hello", "-m", "lots"], "not a size: 'lots'", False),
    "negative timeout": (["run", "hello", "--timeout", "-1"], "'-1' must be positive", False),
    "timeout not a number": (["run", "hello", "--timeout", "soon"], "not a number: 'soon'", False),
    "no guest": (["run"], "a guest is required", False),
    "no subcommand": ([], "the following arguments are required: command", False),
    "unknown subcommand": (["boot"], "invalid choice: 'boot'", False),
    "unknown option": (["run", "hello", "--turbo"], "unrecognized arguments: --turbo", False),
    "BIOS file not 64 KiB": (["run", "--machine", "pc", "--bios", "{dir}/garbage.bin"],
                              "not a positive multiple of 64 KiB", False),
    "zero pages to sweep": (["dirty-demo", "sweeper", "--count", "0"], "'0' must be positive", False),
    "trace of a missing program": (["trace", "--", "{dir}/missing"], "cannot run", False),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    for name, content in FILES.items():
        path = directory / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return directory


@pytest.mark.parametrize("case", [pytest.param(name, marks=requires_kvm if kvm else ()) for name, (_, _, kvm)
                                  in CASES.items()])
def test_bad_input_gives_one_line_and_status_2(case, inputs):
    argv, phrase, _ = CASES[case]
    done = subprocess.run([sys.executable, "-m", "kvmshim.cli", *(a.format(dir=inputs) for a in argv)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvmshim"), done.stderr
    assert "error: " in lines[0] and phrase in lines[0], lines[0]
