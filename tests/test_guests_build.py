"""The guests assemble into images that follow the load convention (no KVM needed)."""
import os
import time

import pytest

import guests


@pytest.mark.parametrize("name", guests.available())
def test_guest_builds(name):
    path = guests.build(name)
    s = guests.spec(name)
    assert path == s.binary and path.stat().st_size > 0
    if s.kind == "flat":
        assert path.stat().st_size < 0x1000


def test_expected_guests_present():
    assert {"hello", "mmio", "bios", "rom-write", "pio", "strio"} <= set(guests.available())


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


def test_rebuilds_only_when_source_is_newer(tmp_path):
    src = tmp_path / "tiny.S"
    src.write_text("# kvmshim: kind=flat\n.code16\n.globl _start\n_start: hlt\n")
    out = guests.build(src)
    mtime = out.stat().st_mtime_ns
    assert guests.build(src).stat().st_mtime_ns == mtime
    later = time.time() + 5
    os.utime(src, (later, later))
    assert guests.build(src).stat().st_mtime_ns != mtime
    out.unlink()


def test_assembler_error_is_typed_with_stderr(tmp_path):
    src = tmp_path / "broken.S"
    src.write_text("# kvmshim: kind=flat\n.code16\n    movx %ax, %bx\n")
    with pytest.raises(guests.GuestBuildError) as err:
        guests.build(src)
    first, _, rest = str(err.value).partition("\n")
    assert first.startswith("as failed on broken.S")
    assert "movx" in rest


def test_missing_kind_header_is_rejected(tmp_path):
    src = tmp_path / "nokind.S"
    src.write_text(".code16\nhlt\n")
    with pytest.raises(guests.GuestBuildError, match="kind=flat"):
        guests.spec(src)


def test_missing_tool_is_reported(tmp_path, monkeypatch):
    src = tmp_path / "tool.S"
    src.write_text("# kvmshim: kind=flat\n.code16\nhlt\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(guests.GuestBuildError, match="as not found on PATH"):
        guests.build(src)
