"""kvmshim.trace without ptrace: request names, struct and exit decoders, text, summary, CLI errors."""
from __future__ import annotations

import pytest

from kvm import ExitReason, IoDirection, ffi, lib
from kvmshim.cli import main
from kvmshim.errors import EXIT_ERROR
from kvmshim.trace import IoctlEvent, Summary, format_event, format_summary
from kvmshim.trace.decode import Hex, PageList, UnreadableMemory, decode_arg, decode_exit, set_bits
from kvmshim.trace.requests import NAMES, request_name


def _bytes(ctype: str, init: dict) -> bytes:
    return ffi.buffer(ffi.new(f"{ctype} *", init))[:]


def _event(request: str, arg, result=0, **kw) -> IoctlEvent:
    return IoctlEvent(pid=100, fd=5, kind="vm", vm=0, vcpu=None, request=request, arg=arg, result=result, **kw)


def test_request_names_come_from_the_binding():
    assert NAMES[lib.KVM_RUN] == "KVM_RUN"
    assert NAMES[lib.KVM_SET_USER_MEMORY_REGION] == "KVM_SET_USER_MEMORY_REGION"
    assert all(getattr(lib, name) == number for number, name in NAMES.items() if name.startswith("KVM_"))
    assert not any(name.startswith(("KVM_CAP_", "KVM_EXIT_", "KVM_MEM_")) for name in NAMES.values())


def test_every_ioctl_of_the_header_is_named():
    assert request_name(0x4008AE90) == "KVM_SET_CPUID2"  # taken from the header, not declared by hand
    assert NAMES[lib.KVM_GET_ONE_REG] == "KVM_GET_ONE_REG"  # not ARM's KVM_ARM_SET_DEVICE_ADDR (same number)


def test_unknown_request_is_shown_like_strace():
    assert request_name(0x4008AEFF) == "_IOC(_IOC_WRITE, 0xae, 0xff, 0x8)"
    assert request_name(0xC008AEFE) == "_IOC(_IOC_READ|_IOC_WRITE, 0xae, 0xfe, 0x8)"


def test_memory_region_with_flag_names_and_address_space():
    data = _bytes("struct kvm_userspace_memory_region", {
        "slot": 1 << 16 | 3, "flags": lib.KVM_MEM_READONLY | lib.KVM_MEM_LOG_DIRTY_PAGES,
        "guest_phys_addr": 0xFFFC0000, "memory_size": 0x40000, "userspace_addr": 0x7F0000000000})
    arg = decode_arg("KVM_SET_USER_MEMORY_REGION", lib.KVM_SET_USER_MEMORY_REGION, 0x1234, data)
    assert arg == {"slot": 3, "as_id": 1, "flags": "LOG_DIRTY_PAGES|READONLY", "guest_phys_addr": 0xFFFC0000,
                   "memory_size": 0x40000, "userspace_addr": 0x7F0000000000}
    assert isinstance(arg["guest_phys_addr"], Hex)


def test_unreadable_struct_falls_back_to_the_pointer():
    assert decode_arg("KVM_IOEVENTFD", lib.KVM_IOEVENTFD, 0x7FF0, None) == Hex(0x7FF0)
    assert str(decode_arg("KVM_IOEVENTFD", lib.KVM_IOEVENTFD, 0x7FF0, None)) == "0x7ff0"


def test_table_whose_entries_cannot_be_read_shows_its_header():
    header = _bytes("struct kvm_msrs", {"nmsrs": 2})
    entries = b"".join(_bytes("struct kvm_msr_entry", {"index": 0x10 + i, "data": i}) for i in range(2))

    def read(addr: int, size: int) -> bytes:
        if addr != 0x8000 + len(header):
            raise UnreadableMemory(f"{size} bytes at {addr:#x}")
        return entries[:size]

    assert decode_arg("KVM_SET_MSRS", lib.KVM_SET_MSRS, 0x8000, header, read=read) == {
        "nmsrs": 2, "entries": {0x10: 0, 0x11: 1}}
    assert decode_arg("KVM_SET_MSRS", lib.KVM_SET_MSRS, 0x9000, header, read=read) == {"nmsrs": 2}


def test_value_arguments():
    assert decode_arg("KVM_CHECK_EXTENSION", lib.KVM_CHECK_EXTENSION, lib.KVM_CAP_NR_MEMSLOTS, None) == \
        "KVM_CAP_NR_MEMSLOTS"
    assert decode_arg("KVM_CHECK_EXTENSION", lib.KVM_CHECK_EXTENSION, 0x7E000000, None) == 0x7E000000
    assert decode_arg("KVM_CREATE_VCPU", lib.KVM_CREATE_VCPU, 2, None) == 2


def test_ioeventfd_and_coalesced_zone():
    data = _bytes("struct kvm_ioeventfd", {"datamatch": 0x2345, "addr": 0x700, "len": 2, "fd": 7,
                                           "flags": lib.KVM_IOEVENTFD_FLAG_PIO | lib.KVM_IOEVENTFD_FLAG_DATAMATCH})
    assert decode_arg("KVM_IOEVENTFD", lib.KVM_IOEVENTFD, 0, data) == {
        "datamatch": 0x2345, "addr": 0x700, "len": 2, "fd": 7, "flags": "DATAMATCH|PIO"}
    zone = _bytes("struct kvm_coalesced_mmio_zone", {"addr": 0xA0000, "size": 0x20000, "pio": 0})
    assert decode_arg("KVM_REGISTER_COALESCED_MMIO", lib.KVM_REGISTER_COALESCED_MMIO, 0, zone) == {
        "addr": 0xA0000, "size": 0x20000, "pio": 0}


def test_dirty_bitmap_bits_and_page_ranges():
    bitmap = (0b1011 | 1 << 70).to_bytes(16, "little")
    assert set_bits(bitmap, 128) == [0, 1, 3, 70]
    assert set_bits(bitmap, 70) == [0, 1, 3]
    assert set_bits(bitmap, 128, first=64) == [64, 65, 67, 134]
    assert str(PageList([0, 1, 2, 3, 7, 9, 10])) == "[0-3, 7, 9-10]"


def _mapping(run: dict, extra: bytes = b"", at: int = 0x1000):
    data = bytearray(_bytes("struct kvm_run", run).ljust(at + len(extra), b"\0"))
    data[at:at + len(extra)] = extra
    return lambda offset, size: bytes(data[offset:offset + size])


def test_io_out_exit_reads_its_data_from_the_mapping():
    read = _mapping({"exit_reason": ExitReason.IO, "io": {
        "direction": IoDirection.OUT, "size": 2, "port": 0x3F8, "count": 2, "data_offset": 0x1000}},
        b"\x48\x00\x69\x00")
    assert decode_exit(read) == {"reason": "IO", "direction": "OUT", "port": 0x3F8, "size": 2, "count": 2,
                                 "data": [0x48, 0x69]}


def test_mmio_write_and_other_exits():
    read = _mapping({"exit_reason": ExitReason.MMIO, "mmio": {
        "phys_addr": 0xD0004, "data": list(b"\x78\x56\x34\x12") + [0] * 4, "len": 4, "is_write": 1}})
    assert decode_exit(read) == {"reason": "MMIO", "phys_addr": 0xD0004, "len": 4, "is_write": 1,
                                 "data": 0x12345678}
    assert decode_exit(_mapping({"exit_reason": ExitReason.HLT})) == {"reason": "HLT"}
    failed = _mapping({"exit_reason": ExitReason.FAIL_ENTRY, "fail_entry": {
        "hardware_entry_failure_reason": 7, "cpu": 1}})
    assert decode_exit(failed) == {"reason": "FAIL_ENTRY", "hardware_entry_failure_reason": 7, "cpu": 1}


def test_lines_read_like_strace():
    region = {"slot": 0, "flags": "READONLY", "guest_phys_addr": Hex(0xFFFC0000), "memory_size": Hex(0x40000),
              "userspace_addr": Hex(0x7F0000000000)}
    assert format_event(_event("KVM_SET_USER_MEMORY_REGION", region), main_pid=100) == (
        "ioctl(5<vm>, KVM_SET_USER_MEMORY_REGION, {slot=0, flags=READONLY, guest_phys_addr=0xfffc0000, "
        "memory_size=0x40000, userspace_addr=0x7f0000000000}) = 0")
    failed = _event("KVM_SET_USER_MEMORY_REGION", Hex(0x10), result=-1, errno="EEXIST")
    assert format_event(failed) == "[pid 100] ioctl(5<vm>, KVM_SET_USER_MEMORY_REGION, 0x10) = -1 EEXIST (File exists)"
    assert format_event(_event("KVM_CREATE_VCPU", 0, result=6), 100) == "ioctl(5<vm>, KVM_CREATE_VCPU, 0) = 6<vcpu0>"
    run = IoctlEvent(100, 6, "vcpu", 0, 0, "KVM_RUN", 0, None)
    assert format_event(run, 100) == "ioctl(6<vcpu0>, KVM_RUN, 0) = ?"
    run.result, run.exit = 0, {"reason": "IO", "direction": "OUT", "port": Hex(0x3F8), "data": [Hex(0x48)]}
    assert format_event(run, 100) == \
        "ioctl(6<vcpu0>, KVM_RUN, 0) = 0 (KVM_EXIT_IO {direction=OUT, port=0x3f8, data=[0x48]})"


def test_json_round_trip():
    event = _event("KVM_GET_DIRTY_LOG", {"slot": 0, "dirty_bitmap": Hex(0x10), "dirty_pages": PageList([3, 5])})
    assert IoctlEvent.from_json(event.to_json()) == event
    assert '"dirty_pages": [3, 5]' in event.to_json()


def test_summary_counts_and_replays_memslots():
    def region(slot, gpa, size, flags="0"):
        return {"slot": slot, "flags": flags, "guest_phys_addr": gpa, "memory_size": size, "userspace_addr": 0x1000}

    events = [_event("KVM_SET_USER_MEMORY_REGION", region(0, 0, 0x100000)),
              _event("KVM_SET_USER_MEMORY_REGION", region(1, 0xFFFF0000, 0x10000, "READONLY")),
              _event("KVM_SET_USER_MEMORY_REGION", region(2, 0x1000, 0x1000), result=-1, errno="EEXIST"),
              _event("KVM_SET_USER_MEMORY_REGION", region(0, 0, 0)),
              IoctlEvent(100, 6, "vcpu", 0, 0, "KVM_RUN", 0, 0, exit={"reason": "HLT"}),
              IoctlEvent(100, 6, "vcpu", 0, 0, "KVM_RUN", 0, -1, errno="EINTR")]
    summary = Summary.of(events)
    assert summary.calls == {"KVM_SET_USER_MEMORY_REGION": 4, "KVM_RUN": 2}
    assert summary.errors == {"KVM_SET_USER_MEMORY_REGION": 1, "KVM_RUN": 1}
    assert summary.exits == {"HLT": 1}
    assert [(s.slot, s.guest_phys_addr, s.flags) for s in summary.memslots[0]] == [(1, 0xFFFF0000, "READONLY")]
    text = format_summary(summary)
    assert "       4       1  KVM_SET_USER_MEMORY_REGION" in text and "       1  KVM_EXIT_HLT" in text
    assert "  0     1         0xffff0000            0x10000             0x1000  READONLY" in text


def test_cli_needs_a_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trace"])
    assert exit_info.value.code == EXIT_ERROR
    assert capsys.readouterr().err.splitlines()[-1] == \
        "kvmshim: error: trace: the following arguments are required: COMMAND"


def test_cli_reports_a_command_that_cannot_run_in_one_line(capsys):
    assert main(["trace", "--", "/nonexistent/program"]) == EXIT_ERROR
    assert capsys.readouterr().err.splitlines() == [
        "kvmshim: error: cannot run '/nonexistent/program': [Errno 2] No such file or directory"]
