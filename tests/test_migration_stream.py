"""A broken stream is refused with a typed error naming its section, never a host exception.

A real stream (sweeper-check, stopped half-way, migrated into a file) is corrupted one byte at a
time in each kind of section and cut at many points; then streams that are well framed (every
CRC right) but lie: pages outside a region, contents that do not add up, state of the wrong
shape, sections twice or missing, and random payloads.
"""
from __future__ import annotations

import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmshim import Machine
from kvmshim.migration import (
    ChecksumError,
    MigrationError,
    StateError,
    StreamError,
    TruncatedStream,
    UnknownSection,
    codec,
    incoming,
    migrate,
)
from kvmshim.migration.layout import MachineLayout
from kvmshim.migration.stream import MAGIC, MAX_PAYLOAD, Kind, StreamWriter
from kvmshim.migration.transport import connect
from test_migration import RAM, sections_of, sweeper_check

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("stream") / "guest.mig"
    with Machine(RAM) as src:
        sweeper_check(src)
        src.start()
        time.sleep(0.2)
        migrate(src, f"file:{path}")
    return path.read_bytes()


@pytest.fixture(scope="module")
def dst():
    with Machine(RAM) as machine:
        sweeper_check(machine)
        yield machine


def load(dst, tmp_path, data: bytes):
    path = tmp_path / "broken.mig"
    path.write_bytes(data)
    return incoming(dst, f"file:{path}")


def section(stream: bytes, kind: Kind, n: int = 0):
    return [s for s in sections_of(stream) if s[0] == kind][n]


def test_the_stream_loads_as_it_is(stream, dst, tmp_path):
    assert load(dst, tmp_path, stream).running == [True]  # it ran when the migration stopped it


@pytest.mark.parametrize("kind, n", [(Kind.CONFIG, 0), (Kind.RAM, 0), (Kind.RAM, 7), (Kind.ROUND, 0), (Kind.VM, 0),
                                     (Kind.CPU, 0), (Kind.DEVICE, 3), (Kind.END, 0)])
def test_a_flipped_byte_is_a_checksum_error_naming_the_section(stream, dst, tmp_path, kind, n):
    _, name, start, payload, end = section(stream, kind, n)
    broken = bytearray(stream)
    broken[(payload + end) // 2 if end - payload > 4 else end - 1] ^= 0x40
    with pytest.raises(ChecksumError, match=f"{kind.name} section {name!r} is corrupted") as error:
        load(dst, tmp_path, bytes(broken))
    assert error.value.section == name


@pytest.mark.parametrize("kind, n, into", [(Kind.CONFIG, 0, 20), (Kind.RAM, 3, 9), (Kind.RAM, 5, 5000), (Kind.VM, 0, 7),
                                           (Kind.CPU, 0, 100), (Kind.DEVICE, 1, 30), (Kind.END, 0, 7)])
def test_a_truncated_stream_names_the_section_it_ends_in(stream, dst, tmp_path, kind, n, into):
    _, name, start, _, end = section(stream, kind, n)
    with pytest.raises(TruncatedStream, match=f"inside {kind.name} section {name!r}") as error:
        load(dst, tmp_path, stream[:min(start + into, end - 1)])
    assert error.value.section == name


def test_a_stream_cut_between_sections_names_the_last_one(stream, dst, tmp_path):
    _, name, _, _, end = section(stream, Kind.DEVICE, 0)
    with pytest.raises(TruncatedStream, match=f"after DEVICE section {name!r}, before its END section"):
        load(dst, tmp_path, stream[:end])


@pytest.mark.parametrize("header, phrase", [
    (b"QEVM\0\0\0\x03", "not a kvmshim migration stream"),
    (MAGIC + struct.pack(">I", 2), "stream version 2, this kvmshim reads version 1")])
def test_another_format_or_version_is_refused(stream, dst, tmp_path, header, phrase):
    with pytest.raises(StreamError, match=phrase):
        load(dst, tmp_path, header[:12].ljust(12, b"\0") + stream[12:])


# ---------------------------------------------------------------- well framed, but lying
def crafted(dst, tmp_path, *sections: tuple[Kind, str, bytes], config: dict | None = None):
    """A stream of the destination's own CONFIG (or ``config``) and then ``sections``, every CRC right."""
    path = tmp_path / "crafted.mig"
    channel = connect(f"file:{path}")
    writer = StreamWriter(channel)
    writer.header()
    writer.section(Kind.CONFIG, "config", codec.encode(config if config is not None else MachineLayout(dst).config()))
    for kind, name, payload in sections:
        writer.section(kind, name, payload)
    writer.flush()
    channel.commit()
    return incoming(dst, f"file:{path}")


def ram(runs: list[tuple[int, int]], zero: bytes, contents: bytes) -> bytes:
    return struct.pack(">I", len(runs)) + b"".join(struct.pack(">II", *run) for run in runs) + zero + contents


def state(stream: bytes, kind: Kind, n: int = 0) -> tuple[str, dict]:
    _, name, _, payload, end = section(stream, kind, n)
    return name, codec.decode(stream[payload:end - 4])


@pytest.mark.parametrize("payload, phrase", [
    (ram([(4096, 1)], b"\x01", b""), r"RAM section 'ram': pages 0x1000\+1 are outside the region \(0x1000 pages\)"),
    (ram([(0, 0)], b"", b""), r"pages 0x0\+0 are outside"),
    (ram([(0, 2)], b"\x01", b"x" * 100), "100 bytes of contents for 2 pages, 1 of them zero"),
    (struct.pack(">I", 1000) + b"\0" * 8, "1000 runs do not fit"),
    (b"\0\0", "too short for its run count"),
], ids=["beyond the region", "empty run", "contents short", "too many runs", "no run count"])
def test_a_ram_section_that_does_not_add_up_writes_nothing(dst, tmp_path, payload, phrase):
    before = dst.ram.ram_block.read(0, 2 * 4096)
    with pytest.raises(StreamError, match=phrase) as error:
        crafted(dst, tmp_path, (Kind.RAM, "ram", payload))
    assert error.value.section == "ram" and dst.ram.ram_block.read(0, 2 * 4096) == before


def test_ram_of_a_region_the_destination_lacks_is_an_unknown_section(dst, tmp_path):
    with pytest.raises(UnknownSection, match=r"RAM section 'vga\.text': this destination has no such region"):
        crafted(dst, tmp_path, (Kind.RAM, "vga.text", ram([(0, 1)], b"\x01", b"")))


def test_state_of_the_wrong_shape_is_a_state_error(stream, dst, tmp_path):
    vm = (Kind.VM, "vm", stream[section(stream, Kind.VM)[3]:section(stream, Kind.VM)[4] - 4])
    name, cpu = state(stream, Kind.CPU)
    with pytest.raises(StateError, match="CPU section 'cpu/0': ValueError: struct kvm_regs is 144 bytes, got 3"):
        crafted(dst, tmp_path, vm, (Kind.CPU, name, codec.encode({**cpu, "regs": b"abc"})))
    with pytest.raises(StateError, match="CPU section 'cpu/0': KeyError: 'sregs'"):
        crafted(dst, tmp_path, vm, (Kind.CPU, name, codec.encode({k: v for k, v in cpu.items() if k != "sregs"})))
    with pytest.raises(StateError, match=r"kvmshim-testdev/0.regs\[4\]: a str, expected int"):
        crafted(dst, tmp_path, (Kind.DEVICE, "kvmshim-testdev/0", codec.encode({"regs": {4: "four"}})))
    with pytest.raises(StateError, match=r"fields \['regs', 'rogue'\], expected \['regs'\]"):
        crafted(dst, tmp_path, (Kind.DEVICE, "kvmshim-testdev/0", codec.encode({"regs": {}, "rogue": 1})))
    with pytest.raises(StreamError, match="DEVICE section 'kvmshim-serial/0': unknown tag 0x7a at offset 0"):
        crafted(dst, tmp_path, (Kind.DEVICE, "kvmshim-serial/0", b"zzz"))


def test_sections_twice_missing_or_unknown_are_refused(stream, dst, tmp_path):
    vm = (Kind.VM, "vm", stream[section(stream, Kind.VM)[3]:section(stream, Kind.VM)[4] - 4])
    with pytest.raises(UnknownSection, match="VM section 'vm': no such section here, or a second one"):
        crafted(dst, tmp_path, vm, vm)
    with pytest.raises(StreamError, match="END before section 'cpu/0'"):
        crafted(dst, tmp_path, vm, (Kind.END, "end", b""))
    with pytest.raises(UnknownSection, match="DEVICE section 'serial/0': no such section here"):
        crafted(dst, tmp_path, (Kind.DEVICE, "serial/0", codec.encode({})))
    with pytest.raises(StreamError, match="unexpected COMMIT section 'commit' before END"):
        crafted(dst, tmp_path, (Kind.COMMIT, "commit", b""))
    with pytest.raises(StreamError, match="expected a CONFIG section, got RAM section 'test-rom'"):
        load(dst, tmp_path, stream[:12] + stream[section(stream, Kind.RAM)[2]:])


def test_an_unknown_kind_or_a_huge_section_is_refused(stream, dst, tmp_path):
    head = bytes((99, 3)) + b"odd" + struct.pack(">I", 0)
    odd = head + struct.pack(">I", zlib.crc32(head))
    _, _, _, _, config_end = section(stream, Kind.CONFIG)
    with pytest.raises(UnknownSection, match="unknown section kind 99 \\(name 'odd'\\) after CONFIG section"):
        load(dst, tmp_path, stream[:config_end] + odd)
    huge = bytes((Kind.RAM, 3)) + b"ram" + struct.pack(">I", MAX_PAYLOAD + 1)
    with pytest.raises(StreamError, match=f"RAM section 'ram' claims {MAX_PAYLOAD + 1} bytes"):
        load(dst, tmp_path, stream[:config_end] + huge)


@pytest.mark.parametrize("config, error, phrase", [
    ([1, 2], StreamError, "CONFIG section: not a dict"),
    ({"machine": "machine"}, StreamError, "CONFIG section: KeyError: 'vcpus'"),
])
def test_a_config_section_of_the_wrong_shape_is_refused(dst, tmp_path, config, error, phrase):
    with pytest.raises(error, match=phrase):
        crafted(dst, tmp_path, config=config)


@pytest.mark.parametrize("key, entry", [("ram", [7, 4096]), ("ram", ["ram", "16M"]),
                                        ("devices", ["kvmshim-testdev/0", "1"])])
def test_a_config_naming_ram_or_devices_oddly_is_refused(dst, tmp_path, key, entry):
    """Names are strings, sizes and versions integers: anything else is refused before it is compared."""
    config = MachineLayout(dst).config()
    config[key] = [*config[key], entry]
    with pytest.raises(StreamError, match="CONFIG section: TypeError: RAM regions and devices are"):
        crafted(dst, tmp_path, config=config)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([Kind.RAM, Kind.VM, Kind.CPU, Kind.DEVICE, Kind.ROUND]), payload=st.binary(max_size=300))
def test_random_payloads_raise_only_migration_errors(dst, tmp_path, kind, payload):
    name = {Kind.RAM: "ram", Kind.CPU: "cpu/0", Kind.DEVICE: "kvmshim-testdev/0", Kind.VM: "vm"}.get(kind, "round")
    with pytest.raises(MigrationError):
        crafted(dst, tmp_path, (kind, name, payload))


# ---------------------------------------------------------------- spliced: every section sound, the stream not
def spliced(stream: bytes, first: int, last: int) -> bytes:
    """``stream`` without its sections ``first`` to ``last`` (indices into sections_of, inclusive)."""
    sections = sections_of(stream)
    return stream[:sections[first][2]] + stream[sections[last][4]:]


def test_a_stream_with_a_round_removed_is_refused(stream, dst, tmp_path):
    """Each ROUND's index must be the rounds seen so far, and the last one must be the final round,
    so a stream with a round's RAM and ROUND sections cut out (every CRC right) does not load."""
    rounds = [i for i, s in enumerate(sections_of(stream)) if s[0] == Kind.ROUND]
    assert len(rounds) == 2  # round 0, then the stop-and-copy round
    with pytest.raises(StreamError, match=r"ROUND section 'round': round 1 where round 0 was expected") as error:
        load(dst, tmp_path, spliced(stream, 1, rounds[0]))  # round 0: from the first RAM section on
    assert error.value.section == "round"
    with pytest.raises(StreamError, match=r"END after round 0, which is not the final one"):
        load(dst, tmp_path, spliced(stream, rounds[0] + 1, rounds[1]))  # the stop-and-copy round
    assert not any(runner.running for runner in dst.runners)


@pytest.mark.parametrize("junk", ["a zero byte", "4000 bytes", "a second END"])
def test_bytes_after_end_in_a_file_are_refused(stream, dst, tmp_path, junk):
    _, _, end, _, _ = section(stream, Kind.END)
    junk = {"a zero byte": b"\0", "4000 bytes": b"junk" * 1000, "a second END": stream[end:]}[junk]
    with pytest.raises(StreamError, match="the file goes on after the END section") as error:
        load(dst, tmp_path, stream + junk)
    assert error.value.section == "end" and not any(runner.running for runner in dst.runners)


def test_round_sections_out_of_order_or_after_the_final_one_are_refused(dst, tmp_path):
    def round_(index: object, final: object = False) -> tuple[Kind, str, bytes]:
        return Kind.ROUND, "round", codec.encode({"index": index, "final": final})

    with pytest.raises(StreamError, match="round 2 where round 1 was expected"):
        crafted(dst, tmp_path, round_(0), round_(2))
    with pytest.raises(StreamError, match="ROUND section 'round' after the final round 0"):
        crafted(dst, tmp_path, round_(0, True), round_(1))
    with pytest.raises(StreamError, match="RAM section 'ram' after the final round 0"):
        crafted(dst, tmp_path, round_(0, True), (Kind.RAM, "ram", ram([(0, 1)], b"\x01", b"")))
    with pytest.raises(StreamError, match=r"ROUND section 'round': not \{'index': int, 'final': bool\}"):
        crafted(dst, tmp_path, round_(True))
    with pytest.raises(StreamError, match=r"ROUND section 'round': not \{'index': int, 'final': bool\}"):
        crafted(dst, tmp_path, (Kind.ROUND, "round", codec.encode([0, False])))


@pytest.mark.parametrize("pattern", ["0", "1", "0110", "1001", "10101", "0" * 255 + "1", "1" + "0" * 252 + "111"])
def test_pages_arrive_wherever_the_zero_pages_are(tmp_path, pattern):
    """The runs between zero pages are cut by the sender and placed by the destination by one rule:
    a page of ``pattern`` is written ('1') or zero ('0'); the destination's RAM starts as junk."""
    from kvmshim import BareMachine

    path = tmp_path / "pattern.mig"
    with BareMachine(1 << 20) as src, BareMachine(1 << 20) as dst:
        for page, mark in enumerate(pattern):
            if mark == "1":
                src.ram.ram_block.write(page * 4096, page.to_bytes(4, "little") * 1024)
        dst.ram.ram_block.write(0, b"\xa5" * (1 << 20))
        migrate(src, f"file:{path}")
        got = incoming(dst, f"file:{path}")
        assert got.pages == 256 and got.rounds == 2  # every page in round 0, none dirtied before the stop
        assert dst.ram.ram_block.read(0, 1 << 20) == src.ram.ram_block.read(0, 1 << 20)
