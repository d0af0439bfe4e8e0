"""Every guest format through guests.plan and kvmshim.loader: the format-specific programs print
on the serial port and exit through the debug-exit port with a status of their own, on real KVM.
Then the load checks (RAM too small, overlaps, bad files) and the pure parts of the plans."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import guests
from guests import Format, GuestFormatError, GuestLoadError, MemoryRange, Mode, Module, multiboot
from kvmshim import loader
from kvmshim.machine import Machine

DATA = Path(__file__).parent / "data" / "guests"
WORKTREE = Path(__file__).resolve().parents[1]
KiB, MiB = 1 << 10, 1 << 20
INITRD = Module(b"initrd data\0", "initrd.img mode=test")


def link(source: Path, out: Path, bits: int, address: int | None) -> Path:
    """Assemble and link a GNU as source into an ELF executable, as a user's own build would."""
    obj = out.with_suffix(".o")
    subprocess.run(["as", f"--{bits}", "-I", str(guests.SOURCE_DIR), "-o", str(obj), str(source)], check=True)
    text = [f"-Ttext={address:#x}"] if address is not None else []
    subprocess.run(["ld", "-m", "elf_i386" if bits == 32 else "elf_x86_64", *text, "-o", str(out), str(obj)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The guests that are not run from their source: assembled images and linked ELF files."""
    d = tmp_path_factory.mktemp("formats")
    made = {
        "boot.img": guests.build(DATA / "nasm-boot.asm"),
        "flat.bin": guests.build(DATA / "nasm-flat.asm"),
        "prog.com": guests.build(DATA / "nasm-com.asm"),
    }
    out = {name: Path(shutil.copy(path, d / name)) for name, path in made.items()}
    out["elf32"] = link(DATA / "elf32.S", d / "elf32", 32, 0x100000)
    out["elf64"] = link(DATA / "elf64.S", d / "elf64", 64, 0x200000)
    out["multiboot"] = link(DATA / "multiboot-elf.S", d / "multiboot", 32, 0x100000)
    out["elf32-default"] = link(DATA / "elf32.S", d / "elf32-default", 32, None)  # ld's 0x8048000
    return out


# (guest: a file in DATA or a key of files(), load options, serial output, exit status, format)
RUNS = {
    "nasm boot sector source": ("nasm-boot.asm", {}, b"boot sector ok\n", 0x11, Format.BOOT_SECTOR),
    "nasm boot sector image": ("boot.img", {}, b"boot sector ok\n", 0x11, Format.BOOT_SECTOR),
    "boot sector at 07c0:0000": ("boot.img", {"entry": (0x07C0, 0)}, b"boot sector ok\n", 0x11,
                                 Format.BOOT_SECTOR),
    "nasm flat source": ("nasm-flat.asm", {}, b"nasm flat ok\n", 0x12, Format.FLAT),
    "nasm flat .bin": ("flat.bin", {}, b"nasm flat ok\n", 0x12, Format.FLAT),
    "nasm without org": ("nasm-org0.asm", {}, b"nasm org 0 ok\n", 0x1A, Format.FLAT),
    "nasm .COM source": ("nasm-com.asm", {}, b"com ok, dos ok\n", 0x13, Format.DOS_COM),
    "nasm .COM image": ("prog.com", {}, b"com ok, dos ok\n", 0x13, Format.DOS_COM),
    ".COM ending in ret": ("nasm-com-ret.asm", {}, b"ret\n", 0, Format.DOS_COM),
    "gas without header": ("gas-noheader.S", {}, b"no header ok\n", 0x14, Format.FLAT),
    "gas with data before _start": ("gas-data-first.S", {}, b"entered at _start\n", 0x15, Format.FLAT),
    "ELF32": ("elf32", {}, b"elf32 ok\n", 0x16, Format.ELF32),
    "ELF64": ("elf64", {}, b"elf64 ok\n", 0x17, Format.ELF64),
    "multiboot ELF kernel": ("multiboot", {"cmdline": "console=ttyS0", "modules": [INITRD]},
                             b"{kernel} console=ttyS0\ninitrd.img mode=test\ninitrd data", 0x18, Format.MULTIBOOT),
    "multiboot address fields": ("multiboot-aout.asm", {"cmdline": "quiet"}, b"aout ok {kernel} quiet", 0x19,
                                 Format.MULTIBOOT),
}


@pytest.mark.kvm
@pytest.mark.parametrize("case", RUNS)
def test_each_format_runs_with_its_load_convention(case, files):
    guest, options, output, status, fmt = RUNS[case]
    path = files.get(guest, DATA / guest)
    with Machine(on_output=None) as m:
        if case == "multiboot address fields":
            m.memory.write(0x100000 + 0x1000, b"\xff" * 0x1000)  # its bss: the loader must clear it
        plan = loader.load(m, path, **options)
        m.run(timeout=30)
        assert plan.format is fmt
        assert bytes(m.serial.output) == output.replace(b"{kernel}", str(path.resolve()).encode())
        assert m.exit_status == status


@pytest.mark.kvm
def test_same_named_sources_alternate_with_the_stock_hello(tmp_path):
    """Two hello.S in two folders and the bundled hello, through the loader and Machine.load (which
    needs the header line)."""
    sources = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        src = tmp_path / folder / "hello.S"
        src.write_text('# kvmshim: kind=flat\n.include "common.inc"\n.code16\n.globl _start\n_start:\n'
                       f'    PUTS msg\n    EXIT 0\nmsg: .asciz "hello from {folder}\\n"\n')
        sources.append(src)
    order = [sources[0], "hello", sources[1], "hello", sources[0], sources[1]]
    expected = [b"hello from one\n", b"Hello from kvmshim guest!\n", b"hello from two\n",
                b"Hello from kvmshim guest!\n", b"hello from one\n", b"hello from two\n"]
    for load_with in (loader.load, Machine.load):
        seen = []
        for guest in order:
            with Machine() as m:
                load_with(m, guest)
                m.run(timeout=30)
                seen.append(bytes(m.serial.output))
        assert seen == expected


SMALL = {
    "flat in 16 KiB": ("hello", 16 * KiB, ["hello.S: flat guests need at least 32 KiB of RAM here (",
                                           "image at 0x1000-",
                                           "stack at 0x8000); this machine has 16 KiB (0x0-0x3fff)"]),
    "boot sector in 16 KiB": ("boot.img", 16 * KiB, ["boot sector guests need at least 32 KiB", "image at 0x7c00-"]),
    ".COM in 64 KiB": ("prog.com", 64 * KiB, ["DOS .COM guests need at least 68 KiB", "stack at 0x10ffe"]),
    "ELF32 at 0x8048000 in 16 MiB": ("elf32-default", 16 * MiB, ["ELF32 guests need at least 129 MiB",
                                                                  "ELF segment 0 at 0x8048000-"]),
    "multiboot kernel in 1 MiB": ("multiboot", 1 * MiB, ["multiboot guests need at least 2 MiB", "kernel segment"]),
}


@pytest.mark.kvm
@pytest.mark.parametrize("case", SMALL)
def test_ram_too_small_is_one_clear_error_before_any_write(case, files):
    guest, ram, fragments = SMALL[case]
    with Machine(ram) as m:
        with pytest.raises(GuestLoadError) as err:
            loader.load(m, files.get(guest, guest))
        assert all(f in str(err.value) for f in fragments) and "\n" not in str(err.value), err.value
        assert m.memory.read(0, 0x1000)[0] == bytes(0x1000)  # nothing was written, not even the IVT
        assert m.vcpus[0].get_regs().rip == 0xFFF0  # nor the vCPU touched


def test_a_segment_in_a_hole_is_named():
    plan = guests.plan(DATA / "nasm-flat.asm")
    with pytest.raises(GuestLoadError, match=r"image at 0x1000-0x\w+ is not RAM on this machine \(RAM: "
                                             r"0x0-0xfff, 0x2000-0xffffff\)"):
        plan.check([MemoryRange(0, 0x1000), MemoryRange(0x2000, 16 * MiB - 0x2000)])


def test_only_ram_entries_of_a_memory_map_count():
    plan = guests.plan(DATA / "nasm-flat.asm")
    with pytest.raises(GuestLoadError, match="need at least 32 KiB"):
        plan.check([MemoryRange(0, 0x4000), MemoryRange(0x4000, 0x10000, 2)])
    plan.check([MemoryRange(0, 0x4000), MemoryRange(0x4000, 0x10000)])


@pytest.mark.kvm
def test_a_read_only_install_runs_guests(tmp_path, files):
    """The project's packages copied to a read-only folder run the stock guest and a .COM."""
    install = tmp_path / "install"
    for package in ("guests", "kvm", "memapi", "listeners", "kvmshim"):
        shutil.copytree(WORKTREE / package, install / package, ignore=shutil.ignore_patterns("__pycache__", "build"))
    paths = [install, *install.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    env = {**os.environ, "PYTHONPATH": f"{install}{os.pathsep}{sysconfig.get_paths()['purelib']}",
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONDONTWRITEBYTECODE": "1"}
    script = ("import sys, kvmshim; from kvmshim import loader; from kvmshim.machine import Machine\n"
              "assert kvmshim.__file__.startswith(sys.argv[1])\n"
              "with Machine() as m:\n    loader.load(m, sys.argv[2]); m.run(30); sys.exit(m.exit_status)")
    try:
        hello = subprocess.run([sys.executable, "-S", "-m", "kvmshim.cli", "run", "hello"], capture_output=True,
                               env=env, cwd=tmp_path, timeout=120)
        com = subprocess.run([sys.executable, "-S", "-c", script, str(install), str(files["prog.com"])],
                             capture_output=True, env=env, cwd=tmp_path, timeout=120)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert (hello.returncode, hello.stdout) == (0, b"Hello from kvmshim guest!\n"), hello.stderr
    assert (com.returncode, com.stdout) == (0x13, b""), com.stderr


# ---------------------------------------------------------------- plans without KVM
def test_format_is_chosen_by_content_then_extension(tmp_path):
    def kind(name: str, data: bytes) -> Format:
        (tmp_path / name).write_bytes(data)
        return guests.plan(tmp_path / name).format

    sector = b"\xf4".ljust(510, b"\0") + b"\x55\xaa"
    assert kind("disk.img", sector) is Format.BOOT_SECTOR
    assert kind("noext", sector) is Format.BOOT_SECTOR
    assert kind("short.img", sector[1:]) is Format.FLAT
    assert kind("code.bin", b"\xf4") is Format.FLAT
    assert kind("sector.com", sector) is Format.DOS_COM
    with pytest.raises(GuestFormatError, match="cannot tell the format of a text file"):
        kind("notes.txt", b"mov ax, bx\n")


def test_real_mode_entry_states():
    boot, com, flat = (guests.plan(DATA / name) for name in ("nasm-boot.asm", "nasm-com.asm", "nasm-org0.asm"))
    assert (boot.entry.mode, boot.entry.cs, boot.entry.ip, boot.entry.ss, boot.entry.sp, boot.entry.regs) == (
        Mode.REAL, 0, 0x7C00, 0, 0x7C00, {"rdx": 0x80})
    assert (com.entry.cs, com.entry.ds, com.entry.ss, com.entry.ip, com.entry.sp) == (0x100, 0x100, 0x100, 0x100,
                                                                                      0xFFFE)
    psp = next(s for s in com.segments if s.what == "PSP")
    assert (psp.gpa, psp.data[:2], psp.data[0x50:0x53]) == (0x1000, b"\xcd\x20", b"\xcd\x21\xcb")
    assert (flat.entry.cs, flat.entry.ip, flat.entry.ds) == (0x100, 0, 0x100)
    assert [s.gpa for s in flat.segments] == [0, 0x1000]  # the real-mode services, the image


def test_com_command_tail_and_memory_top():
    plan = guests.plan(DATA / "nasm-com.asm", cmdline="/v file.txt", memory_map=[MemoryRange(0, 256 * KiB)])
    psp = next(s for s in plan.segments if s.what == "PSP").data
    assert psp[2:4] == (0x4000).to_bytes(2, "little")  # 256 KiB of RAM: memory ends at segment 4000
    assert psp[0x80:0x81 + psp[0x80] + 1] == b"\x0c /v file.txt\r"


def test_gas_entry_is_start():
    plan = guests.plan(DATA / "gas-data-first.S")
    image = next(s for s in plan.segments if s.what == "image")
    assert image.data[0] == 0xF4 and plan.entry.ip == 0x1014 and plan.entry.ip > image.gpa


def test_load_and_entry_overrides(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\xf4")
    high = guests.plan(raw, load=0x20000)
    assert (high.entry.cs, high.entry.ip, high.segments[-1].gpa) == (0x2000, 0, 0x20000)
    low = guests.plan(raw, load=0x3000, entry=(0x0300, 0))
    assert (low.entry.cs, low.entry.ip) == (0x300, 0)
    relinked = guests.plan(DATA / "gas-noheader.S", load=0x2000)
    assert relinked.entry.ip == 0x2000 and relinked.segments[-1].gpa == 0x2000
    with pytest.raises(GuestFormatError, match="a load address applies to flat images; a boot sector"):
        guests.plan(DATA / "nasm-boot.asm", load=0x8000)
    with pytest.raises(GuestFormatError, match="linked below 64 KiB"):
        guests.plan(DATA / "gas-noheader.S", load=0x20000)


def test_modules_and_command_lines_only_where_the_format_takes_them(tmp_path):
    """Refused by the plan, before anything is loaded, for every way in (API and CLI alike)."""
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\xf4")
    with pytest.raises(GuestFormatError, match=re.escape("raw.bin: modules (--initrd) apply to multiboot "
                                                         "kernels; this is a flat guest")):
        guests.plan(raw, modules=[Module(b"x", "x")])
    with pytest.raises(GuestFormatError, match=re.escape("nasm-boot.asm: a command line (--append) applies to "
                                                         "multiboot kernels and .COM programs; this is a boot "
                                                         "sector guest")):
        guests.plan(DATA / "nasm-boot.asm", cmdline="quiet")
    with Machine() as m, pytest.raises(GuestFormatError):
        m.load(raw, modules=[Module(b"x", "x")])


def test_entry_points_as_people_write_them():
    assert [guests.parse_entry(t) for t in ("07c0:0000", "0:7C00", "0x100000", "4096")] == [
        (0x7C0, 0), (0, 0x7C00), 0x100000, 4096]
    for bad in ("10000:0", "here", "0x7c0:"):
        with pytest.raises(ValueError, match="not an entry point"):
            guests.parse_entry(bad)


def test_overlaps_are_named(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(0x7800))
    with pytest.raises(GuestLoadError, match=r"big.bin: image at 0x1000-0x87ff runs into its stack at 0x8000"):
        guests.plan(big)
    with pytest.raises(GuestLoadError, match=r"real-mode services at 0x0-0x\w+ overlaps image at 0x400-"):
        guests.plan(big, load=0x400)
    assert [s.describe() for s in guests.plan(big, load=0x400, services=False).segments] == [
        "image at 0x400-0x7bff"]


def test_a_services_source_is_no_guest_of_its_own(tmp_path):
    src = tmp_path / "svc.S"
    src.write_text("# kvmshim: kind=services\n.code16\n    hlt\n")
    with pytest.raises(GuestFormatError, match=r"svc.S: kind=services is part of other guests, not one of its own"):
        guests.plan(src, services=False)


def test_bad_elf_files_are_named(tmp_path, files):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x7fELF\xff\xfe\x00\x89PNG\r\n" + bytes(range(256)))
    with pytest.raises(GuestFormatError, match=r"garbage.bin: not a loadable ELF executable: class 255"):
        guests.plan(garbage)
    pie = bytearray(files["elf32"].read_bytes())
    pie[16:18] = (3).to_bytes(2, "little")  # ET_DYN
    (tmp_path / "pie").write_bytes(pie)
    with pytest.raises(GuestFormatError, match=r"type 3 \(ET_EXEC expected"):
        guests.plan(tmp_path / "pie")
    with pytest.raises(GuestFormatError, match="a SEG:OFF entry applies to real-mode guests"):
        guests.plan(files["elf32"], entry=(0, 0x1000))


def test_elf64_runs_where_it_is_linked(files):
    plan = guests.plan(files["elf64"])
    assert plan.entry.mode is Mode.LONG and plan.entry.cs == 0x18 and plan.entry.cr3 is not None
    tables = next(s for s in plan.segments if s.what == "page tables")
    pml4 = struct.unpack_from("<Q", tables.data)[0]
    assert tables.gpa == plan.entry.cr3 and pml4 & ~0xFFF == plan.entry.cr3 + 0x1000
    # The directory entry for 2 MiB, where the image is: present, writable, a 2 MiB page at 2 MiB.
    assert struct.unpack_from("<Q", tables.data, 0x2000 + 8)[0] == 0x200000 | 0x83
    bss = next(s for s in plan.segments if s.zeros)
    assert bss.what.startswith("ELF segment")


def _c_string(data: bytes, base: int, addr: int) -> bytes:
    return data[addr - base:].split(b"\0", 1)[0]


def test_multiboot_info_block():
    kernel = guests.build(DATA / "multiboot-aout.asm").read_bytes()
    memory_map = [MemoryRange(0, 0xD0000), MemoryRange(0xD1000, 0xF000), MemoryRange(0xE1000, 32 * MiB - 0xE1000)]
    plan = multiboot.plan(kernel, cmdline="kernel root=/dev/sda", memory_map=memory_map,
                          modules=[Module(b"first", "one a=1"), Module(b"second", "two")])
    entry = plan.entry
    info = next(s for s in plan.segments if s.what == "multiboot info")
    data, base = info.data, info.gpa
    assert (entry.mode, entry.regs["rax"], entry.regs["rbx"], entry.cs, entry.ds) == (
        Mode.PROTECTED, 0x2BADB002, base, 0x08, 0x10)
    flags, lower, upper, boot_device, cmdline, count, mods = struct.unpack_from("<7I", data)
    assert flags == 0x24F and (lower, upper) == (640, 31 * KiB) and boot_device == 0x8000FFFF
    assert _c_string(data, base, cmdline) == b"kernel root=/dev/sda"
    modules = [struct.unpack_from("<4I", data, mods - base + 16 * i) for i in range(count)]
    placed = {s.what: s for s in plan.segments}
    assert [(m[0], m[1] - m[0]) for m in modules] == [(placed["module 0"].gpa, 5), (placed["module 1"].gpa, 6)]
    assert [m[0] % 0x1000 for m in modules] == [0, 0] and placed["module 0"].gpa >= placed["kernel"].end
    assert [_c_string(data, base, m[2]) for m in modules] == [b"one a=1", b"two"]
    mmap_length, mmap_addr = struct.unpack_from("<II", data, 44)
    entries = [struct.unpack_from("<IQQI", data, mmap_addr - base + off) for off in range(0, mmap_length, 24)]
    assert entries == [(20, r.start, r.size, 1) for r in memory_map]
    assert _c_string(data, base, struct.unpack_from("<I", data, 64)[0]) == b"kvmshim"
    assert entry.ip == 0x100020 and placed["kernel"].zeros == 0x1000


def test_multiboot_header_errors(tmp_path, files):
    def header(flags: int, *fields: int) -> bytes:
        return struct.pack("<3I", multiboot.HEADER_MAGIC, flags, -(multiboot.HEADER_MAGIC + flags) & 0xFFFFFFFF) + \
            struct.pack(f"<{len(fields)}I", *fields)

    memory = [MemoryRange(0, 16 * MiB)]
    with pytest.raises(GuestFormatError, match="requires features 0x8 this loader does not know"):
        multiboot.plan(header(0x8), memory_map=memory)
    with pytest.raises(GuestFormatError, match=r"without address fields \(flag 16\) must be an ELF file"):
        multiboot.plan(header(0x3).ljust(64, b"\0"), memory_map=memory)
    with pytest.raises(GuestFormatError, match="address fields do not fit the file"):
        multiboot.plan(header(0x10000, 0x100000, 0x100100, 0, 0, 0x100000), memory_map=memory)
    elf64 = bytearray(files["elf64"].read_bytes())
    elf64[0x100:0x10C] = header(0x3)  # after the program headers, within the first 8 KiB
    with pytest.raises(GuestFormatError, match=r"must be ELF32 \(QEMU: Cannot load x86-64 image"):
        multiboot.plan(bytes(elf64), memory_map=memory)
    assert multiboot.find_header(b"\0" * 8192 + header(0x3)) is None  # past the first 8 KiB
