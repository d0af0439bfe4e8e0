"""Building guests: the bundled ones, the cache keyed by content and includes (outside the package,
also from a read-only install), the tools' full error output, names and the guests CLI. No KVM."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import guests
from guests import toolchain

FLAT = "# kvmshim: kind=flat\n.code16\n.text\n.globl _start\n_start:\n"
WORKTREE = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private guest cache: XDG_CACHE_HOME in the test's directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "kvmshim" / "guests"


@pytest.mark.parametrize("name", guests.available())
def test_guest_builds(name):
    path = guests.build(name)
    s = guests.spec(name)
    assert path.stat().st_size > 0 and path.name == f"{name}.bin"
    assert guests.SOURCE_DIR not in path.parents
    if s.kind == "flat":
        assert path.stat().st_size < 0x1000


def test_expected_guests_present():
    names = set(guests.available())
    assert {"hello", "mmio", "bios", "rom-write", "pio", "strio"} <= names
    assert "services" not in names  # the real-mode services are part of plans, not a guest to run


def test_bios_is_a_64k_rom_with_far_jump_at_reset_vector():
    image = guests.build("bios").read_bytes()
    s = guests.spec("bios")
    assert len(image) == 0x10000
    assert (s.kind, s.load_gpa, s.alias_gpa, s.cs, s.ip) == ("bios", 0xFFFF0000, 0xF0000, 0xF000, 0xFFF0)
    assert image[0xFFF0] == 0xEA  # jmp ptr16:16
    offset, segment = int.from_bytes(image[0xFFF1:0xFFF3], "little"), int.from_bytes(image[0xFFF3:0xFFF5], "little")
    assert segment == 0xF000 and offset < 0xFFF0


def test_flat_spec():
    s = guests.spec("hello")
    assert (s.kind, s.load_gpa, s.cs, s.ip, s.sp) == ("flat", 0x1000, 0, 0x1000, 0x8000)
    assert b"Hello from kvmshim guest!\n" in guests.build("hello").read_bytes()


def test_cache_lives_in_xdg_cache_home(cache):
    path = guests.build("hello")
    assert path.parent.parent == cache and guests.cache_dir() == cache


def test_relative_xdg_cache_home_is_ignored(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert toolchain.cache_dir() == Path.home() / ".cache" / "kvmshim" / "guests"


def test_same_content_is_built_once_and_an_edit_rebuilds(cache, tmp_path):
    src = tmp_path / "tiny.S"
    src.write_text(FLAT + "    hlt\n")
    first = guests.build(src)
    mtime = first.stat().st_mtime_ns
    assert guests.build(src) == first and first.stat().st_mtime_ns == mtime
    src.write_text(FLAT + "    nop\n    hlt\n")
    second = guests.build(src)
    assert second != first and second.read_bytes() == b"\x90\xf4"
    assert first.read_bytes() == b"\xf4"  # the old entry stays valid for the old content


def test_same_named_sources_in_two_folders_get_their_own_images(cache, tmp_path):
    images = []
    for folder, byte in (("a", "0x41"), ("b", "0x42")):
        (tmp_path / folder).mkdir()
        src = tmp_path / folder / "hello.S"
        src.write_text(FLAT + f"    .byte {byte}\n")
        images.append(guests.build(src))
    stock = guests.build("hello")
    assert len({images[0], images[1], stock}) == 3
    assert [p.read_bytes() for p in images] == [b"A", b"B"]
    assert b"Hello from kvmshim guest!" in stock.read_bytes()


@pytest.mark.parametrize("directive", ['.include "{}"', '#include "{}"'])
def test_an_edit_of_a_nested_include_rebuilds(cache, tmp_path, directive):
    (tmp_path / "outer.inc").write_text('.include "inner.inc"\n')
    inner = tmp_path / "inner.inc"
    inner.write_text(".byte 1\n")
    src = tmp_path / "uses.S"
    src.write_text(FLAT + directive.format("outer.inc") + "\n")
    assert guests.build(src).read_bytes() == b"\x01"
    inner.write_text(".byte 2\n")
    assert guests.build(src).read_bytes() == b"\x02"


def test_an_edit_of_a_nasm_include_rebuilds(cache, tmp_path):
    inc = tmp_path / "data.inc"
    inc.write_text("db 1\n")
    src = tmp_path / "n.asm"
    src.write_text('%include "data.inc"\n')
    assert guests.build(src).read_bytes() == b"\x01"
    inc.write_text("db 2\n")
    assert guests.build(src).read_bytes() == b"\x02"


def test_includes_are_found_next_to_the_source_then_in_the_package(tmp_path):
    (tmp_path / "common.inc").write_text("# a user's own common.inc shadows the bundled one\n")
    src = tmp_path / "x.S"
    src.write_text('.include "common.inc"\n.include "pm32.inc"\n')
    assert toolchain.inputs(src.resolve()) == [src.resolve(), (guests.SOURCE_DIR / "pm32.inc"),
                                               (tmp_path / "common.inc").resolve()]


def test_a_read_only_install_builds_into_the_cache(tmp_path):
    """The package copied to a read-only folder: building and planning write only the cache.
    (``python -S``: the editable install's import hook would otherwise find the worktree's copy.)"""
    install = tmp_path / "install"
    shutil.copytree(guests.SOURCE_DIR, install / "guests", ignore=shutil.ignore_patterns("__pycache__", "build"))
    for path in [install, *install.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    env = {**os.environ, "PYTHONPATH": str(install), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    script = ("import guests, sys; assert guests.__file__.startswith(sys.argv[1]), guests.__file__; "
              "print(guests.build('hello')); print(guests.plan(sys.argv[2]).describe())")
    com = tmp_path / "prog.com"
    com.write_bytes(b"\xcd\x20")
    try:
        done = subprocess.run([sys.executable, "-S", "-c", script, str(install), str(com)], capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path)
    finally:
        for path in [install, *install.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "xdg") in done.stdout and "real-mode services" in done.stdout
    assert sorted(p.name for p in (install / "guests").iterdir()) == sorted(
        p.name for p in guests.SOURCE_DIR.iterdir() if p.name not in ("__pycache__", "build"))


def test_an_unwritable_cache_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    src = tmp_path / "t.S"
    src.write_text(FLAT + "    hlt\n")
    with pytest.raises(guests.GuestBuildError, match=r"cannot write the guest cache .*XDG_CACHE_HOME"):
        guests.build(src)


def test_assembler_errors_reach_the_user_in_full(cache, tmp_path):
    src = tmp_path / "broken.S"
    src.write_text(FLAT + "    movx %ax, %bx\n    mov %ax\n")
    with pytest.raises(guests.GuestBuildError) as err:
        guests.build(src)
    first, *rest = str(err.value).splitlines()
    assert first.startswith("as failed on broken.S (exit 1): ") and f"{src}:6: Error: no such instruction" in first
    assert any(f"{src}:6:" in line and "movx" in line for line in rest)
    assert any(f"{src}:7:" in line for line in rest)


def test_linker_error_names_the_cause_first(cache, tmp_path):
    src = tmp_path / "undef.S"
    src.write_text(FLAT + "    jmp nowhere\n")
    with pytest.raises(guests.GuestBuildError) as err:
        guests.build(src)
    first, *rest = str(err.value).splitlines()
    assert first.startswith("ld failed on undef.S (exit 1): ") and "undefined reference to `nowhere'" in first
    assert any("in function `_start'" in line for line in rest)


def test_preprocessor_error_names_the_missing_include(cache, tmp_path):
    src = tmp_path / "inc.S"
    src.write_text('#include "no-such.inc"\n')
    with pytest.raises(guests.GuestBuildError, match=r"cpp failed on inc\.S \(exit 1\): .*no-such\.inc"):
        guests.build(src)


def test_nasm_errors_reach_the_user_in_full(cache, tmp_path):
    src = tmp_path / "bad.asm"
    src.write_text("bits 16\n    mov ax, nowhere\n    mov bx, elsewhere\n")
    with pytest.raises(guests.GuestBuildError) as err:
        guests.build(src)
    first, *rest = str(err.value).splitlines()
    assert first == f"nasm failed on bad.asm (exit 1): {src}:2: error: symbol `nowhere' not defined"
    assert f"{src}:3: error: symbol `elsewhere' not defined" in rest


def test_spec_requires_the_kind_header(tmp_path):
    src = tmp_path / "nokind.S"
    src.write_text(".code16\nhlt\n")
    with pytest.raises(guests.GuestBuildError, match="kind=flat"):
        guests.spec(src)
    assert guests.plan(src, services=False).format is guests.Format.FLAT  # plans take header-less sources


def test_a_bad_kind_header_is_rejected(tmp_path):
    src = tmp_path / "weird.S"
    src.write_text("# kvmshim: kind=weird\nhlt\n")
    with pytest.raises(guests.GuestBuildError, match="got '# kvmshim: kind=weird'"):
        guests.plan(src)


def test_missing_tool_is_reported(cache, tmp_path, monkeypatch):
    src = tmp_path / "tool.s"
    src.write_text(".code16\nhlt\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(guests.GuestBuildError, match=r"as not found on PATH .*install binutils"):
        guests.build(src)


def test_an_unknown_name_lists_the_bundled_guests():
    with pytest.raises(guests.GuestBuildError) as err:
        guests.resolve("no-such-guest")
    assert "no bundled guest" in str(err.value) and "hello" in str(err.value) and "services" not in str(err.value)


@pytest.mark.parametrize("reader, shown", [("head -1", "bios\n"), ("true", "")])
def test_list_into_a_closed_pipe_ends_cleanly(reader, shown):
    """`true` exits before the list is written: the write meets a closed pipe."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m guests list | {reader}"],
                          capture_output=True, text=True, timeout=60, cwd=WORKTREE)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", shown)
