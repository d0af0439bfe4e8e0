"""`kvmshim run FILE` as users type it (`python -m kvmshim run ...`, a subprocess each): every guest
format prints on the serial port and exits with a status of its own, the loading options, QEMU's
debug-exit convention, same-named sources, --trace-exits, and the command line around `run`.
The error cases are tests/test_hostile_input.py's."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvmshim.errors import EXIT_ERROR
from test_guest_formats import DATA, INITRD, RUNS, files  # noqa: F401 - files is the module's fixture

HELLO = b"Hello from kvmshim guest!\n"


def kvmshim(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmshim", *argv], capture_output=True, cwd=cwd, timeout=120)


def cli_options(options: dict) -> list[str]:
    """RUNS' loader options as `kvmshim run` options (the initrd as QEMU writes it: 'file args')."""
    argv = []
    if "entry" in options:
        argv += ["--entry", "{:04x}:{:04x}".format(*options["entry"])]
    if "cmdline" in options:
        argv += ["--append", options["cmdline"]]
    if options.get("modules") == [INITRD]:
        argv += ["--initrd", INITRD.cmdline]
    return argv


@pytest.mark.kvm
@pytest.mark.parametrize("case", RUNS)
def test_each_format_runs_from_the_command_line(case, files, tmp_path):
    guest, options, output, status, _ = RUNS[case]
    path = files.get(guest, DATA / guest)
    (tmp_path / INITRD.cmdline.split()[0]).write_bytes(INITRD.data)
    done = kvmshim("run", str(path), *cli_options(options), "--timeout", "30", cwd=tmp_path)
    assert done.stderr == b""
    assert (done.returncode, done.stdout) == (status, output.replace(b"{kernel}", str(path.resolve()).encode()))


@pytest.mark.kvm
def test_load_address_and_entry_of_a_raw_image(tmp_path):
    """A flat image moved with --load and entered with --entry: it reports its CS through the port."""
    image = tmp_path / "where.bin"
    # mov ax, cs; mov dx, 0x501; out dx, al (the exit status is CS's low byte)
    image.write_bytes(bytes.fromhex("8cc8 ba0105 ee f4"))
    assert kvmshim("run", str(image), "--load", "0x7770").returncode == 0x00  # 0000:7770
    assert kvmshim("run", str(image), "--load", "0x7770", "--entry", "0777:0000").returncode == 0x77
    assert kvmshim("run", str(image), "--load", "0x23450").returncode == 0x45  # 2345:0000, above 64 KiB


@pytest.mark.kvm
def test_qemu_debug_exit_convention_and_port(guest_asm):
    guest = guest_asm("    mov $0xf4, %dx\n    mov $0x12, %al\n    out %al, %dx\n    hlt\n")
    assert kvmshim("run", str(guest), "--debug-exit", "qemu", "--debug-exit-port", "0xf4").returncode == 0x25
    raw = kvmshim("run", str(DATA / "nasm-flat.asm"), "--debug-exit", "raw")
    qemu = kvmshim("run", str(DATA / "nasm-flat.asm"), "--debug-exit", "qemu")
    assert (raw.returncode, qemu.returncode) == (0x12, 0x12 << 1 | 1) and raw.stdout == qemu.stdout


@pytest.mark.kvm
def test_same_named_sources_alternate_with_the_stock_hello(tmp_path):
    sources = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        src = tmp_path / folder / "hello.S"
        src.write_text(f'.include "common.inc"\n.code16\n.globl _start\n_start:\n    PUTS msg\n    EXIT {len(folder)}\n'
                       f'msg: .asciz "hello from {folder}\\n"\n')
        sources.append(str(src))
    order = [sources[0], "hello", sources[1], "hello", sources[0], sources[1]]
    seen = [(done.returncode, done.stdout) for done in (kvmshim("run", guest) for guest in order)]
    assert seen == [(3, b"hello from one\n"), (0, HELLO), (3, b"hello from two\n"), (0, HELLO),
                    (3, b"hello from one\n"), (3, b"hello from two\n")]


@pytest.mark.kvm
def test_guest_status_is_the_exit_status(guest_asm):
    for status in (0, 1, 124, 126, 255):
        assert kvmshim("run", str(guest_asm(f"    EXIT {status}\n"))).returncode == status
    assert kvmshim("run", str(guest_asm("    hlt\n"))).returncode == 0


@pytest.mark.kvm
def test_trace_exits_names_the_region_of_each_exit():
    done = kvmshim("run", "--trace-exits", "mmio")
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 0 and lines
    assert all(re.fullmatch(r"\[(pio|mmio) 0x[0-9a-f]{4,} (<-|->) 0x[0-9a-f]+ size \d( [\w-]+\+0x[0-9a-f]+| "
                            r"\(unassigned\))\]", line) for line in lines), lines
    assert "[pio 0x03f8 <- 0x6d size 1 serial+0x0]" in lines  # the "m" of "mmio ok"
    assert "[mmio 0xd0000 -> 0x4b564d53 size 4 testdev+0x0]" in lines
    assert lines[-1] == "[pio 0x0501 <- 0x00 size 1 debug-exit+0x0]"


def test_commands_version_and_help():
    bare = kvmshim()
    assert bare.returncode == 0
    assert re.search(rb"commands:\n  COMMAND\n    run .*\n    qemu .*\n    mtree .*\n    trace ", bare.stdout)
    assert b"125      kvmshim itself failed" in bare.stdout and bare.stdout == kvmshim("--help").stdout
    version = kvmshim("--version")
    assert version.returncode == 0 and re.fullmatch(rb"kvmshim \d+\.\d+\.\d+\n", version.stdout)
    run_help = kvmshim("run", "--help").stdout.decode()
    for option in ("--load ADDR", "--entry SEG:OFF|ADDR", "--append CMDLINE", "--initrd", "--debug-exit {raw,qemu}",
                   "--strict", "multiboot v1", ".asm .nasm", ".com", "ELF32 / ELF64", "512 bytes ending 55 AA"):
        assert option in run_help


def test_the_console_script_and_python_m_agree():
    script = Path(sys.executable).with_name("kvmshim")
    assert subprocess.run([script, "--version"], capture_output=True).stdout == kvmshim("--version").stdout
    assert subprocess.run([script, "run"], capture_output=True).returncode == EXIT_ERROR


def test_ram_sizes_take_k_m_g_and_t():
    from argparse import ArgumentTypeError

    from kvmshim.commands import parse_size

    assert [parse_size(t) for t in ("512k", "16M", "2g", "1T", "0x100000", "8192")] == [
        512 << 10, 16 << 20, 2 << 30, 1 << 40, 1 << 20, 8192]
    with pytest.raises(ArgumentTypeError, match="not a size: '1P'"):
        parse_size("1P")


@pytest.mark.kvm
def test_a_terabyte_of_ram_is_only_reserved(guest_asm):
    """-m 1T maps 1 TiB without touching it (MAP_NORESERVE), as QEMU's -m does."""
    assert kvmshim("run", "-m", "1T", str(guest_asm("    EXIT 9\n"))).returncode == 9


@pytest.mark.kvm
def test_trace_lines_stay_whole_in_a_pipe_shared_with_the_guest():
    """`kvmshim trace` and the traced run's serial output in one pipe: the guest's bytes fall between
    trace lines, never inside one."""
    done = subprocess.run([sys.executable, "-m", "kvmshim", "trace", "--", sys.executable, "-m", "kvmshim", "run",
                           "hello"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    text = done.stdout.decode()
    lines = re.findall(r"ioctl\(.*?\n", text)
    line = re.compile(r"ioctl\(\d+<(kvm|vm|vcpu\d+)>, [A-Z_0-9]+, .*\) = .*\n")
    assert done.returncode == 0 and len(lines) > 50 and all(line.fullmatch(x) for x in lines)
    assert re.sub(r"ioctl\(.*?\n", "", text) == HELLO.decode()


def test_pc_only_options_are_refused_for_the_test_machine():
    done = kvmshim("run", "hello", "--smp", "2", "--disk", "x.img")
    assert done.returncode == EXIT_ERROR
    assert done.stderr.strip() == b"kvmshim: error: --disk --smp: only with --machine pc"


def test_trace_exits_names_the_regions_of_the_pc_machine():
    done = kvmshim("run", "--machine", "pc", "--trace-exits", "--timeout", "60")
    assert done.returncode == 0, done.stderr[-500:]
    assert re.search(rb"\[pio 0x0510 <- 0x0000 size 2 fwcfg\+0x0\]", done.stderr), done.stderr[:500]
