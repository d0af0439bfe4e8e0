"""MMIO callback styles (issue 8): classic read/write, transaction(tx) and a register table.

All three are MemoryRegionOps on the one dispatch path, so for the same device, rules
and accesses they must see the same sub-accesses and give the same results, through
dispatch, address-space reads/writes and the exit fast path alike.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

import memapi
from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps, MemTxResult, Register, RegisterTable, Unknown

SIZE = 0x20
#: (name, offset, width, reset, ro_mask, w1c_mask); bytes 0x07 and 0x18..0x1f belong to no register.
LAYOUT = [
    ("A", 0x00, 4, 0x11223344, 0xFF000000, 0),
    ("B", 0x04, 2, 0xBEEF, 0, 0x00F0),
    ("C", 0x06, 1, 0x5A, 0x0F, 0),
    ("D", 0x08, 8, 0x0102030405060708, 0xFFFF, 0xF0000),
    ("E", 0x10, 4, 0xCAFEF00D, 0, 0xFF),
    ("F", 0x14, 2, 0x1234, 0, 0),
]


class ByteModel:
    """The reference semantics, written independently as a plain read/write device over bytes."""

    def __init__(self, order: str, unknown: Unknown) -> None:
        self.order, self.fill = order, 0xFF if unknown is Unknown.ALL_ONES else 0
        self.mem, self.ro, self.w1c, self.known = bytearray(SIZE), bytearray(SIZE), bytearray(SIZE), [False] * SIZE
        for _, offset, width, reset, ro, w1c in LAYOUT:
            for arr, value in ((self.mem, reset), (self.ro, ro), (self.w1c, w1c)):
                arr[offset:offset + width] = value.to_bytes(width, order)
            self.known[offset:offset + width] = [True] * width

    def read(self, offset: int, size: int) -> int:
        out = bytes(self.mem[a] if a < SIZE and self.known[a] else self.fill for a in range(offset, offset + size))
        return int.from_bytes(out, self.order)

    def write(self, offset: int, value: int, size: int) -> None:
        for i, v in enumerate(value.to_bytes(size, self.order)):
            a = offset + i
            if a < SIZE and self.known[a]:
                old, ro, w1c = self.mem[a], self.ro[a], self.w1c[a]
                self.mem[a] = (old & ro) | (old & w1c & ~v) | (v & ~(ro | w1c) & 0xFF)

    def accepts(self, mr, offset, size, is_write, attrs) -> bool:
        return all(a < SIZE and self.known[a] for a in range(offset, offset + size))

    def state(self) -> bytes:
        return bytes(self.mem[a] if self.known[a] else 0 for a in range(SIZE))


def logged(ops: MemoryRegionOps, log: list) -> MemoryRegionOps:
    """The same ops, recording each callback's (kind, offset, size, value)."""
    def read(mr, offset, size):
        value = ops.read(mr, offset, size)
        log.append(("r", offset, size, value))
        return value

    def write(mr, offset, value, size):
        log.append(("w", offset, size, value))
        ops.write(mr, offset, value, size)

    return replace(ops, read=read, write=write)


def classic(endianness, valid, impl, unknown, log):
    model = ByteModel("big" if endianness == Endianness.BIG else "little", unknown)
    if unknown is Unknown.ERROR:
        valid = replace(valid, accepts=model.accepts)
    ops = MemoryRegionOps(read=lambda mr, o, s: model.read(o, s), write=lambda mr, o, v, s: model.write(o, v, s),
                          endianness=endianness, valid=valid, impl=impl)
    return logged(ops, log), model.state


def transaction(endianness, valid, impl, unknown, log):
    model = ByteModel("big" if endianness == Endianness.BIG else "little", unknown)
    if unknown is Unknown.ERROR:
        valid = replace(valid, accepts=model.accepts)

    def handler(tx: memapi.MemoryTransaction) -> None:
        assert tx.mr.name == "dev" and tx.attrs is not None
        if tx.is_write:
            log.append(("w", tx.address, tx.size, tx.data))
            model.write(tx.address, tx.data, tx.size)
        else:
            tx.data = model.read(tx.address, tx.size)
            log.append(("r", tx.address, tx.size, tx.data))

    return memapi.transaction_ops(handler, endianness=endianness, valid=valid, impl=impl), model.state


def table(endianness, valid, impl, unknown, log):
    regs = RegisterTable([Register(n, o, w, r, ro, w1c) for n, o, w, r, ro, w1c in LAYOUT], unknown=unknown,
                         endianness=endianness, valid=valid, impl=impl)
    order = "big" if endianness == Endianness.BIG else "little"

    def state() -> bytes:
        out = bytearray(SIZE)
        for reg in regs.registers:
            out[reg.offset:reg.end] = regs[reg.name].to_bytes(reg.width, order)
        return bytes(out)

    return logged(regs.ops, log), state


STYLES = {"classic": classic, "transaction": transaction, "table": table}
RULES = {
    "direct": (AccessRules(1, 8, unaligned=True), AccessRules(1, 8, unaligned=True)),
    "split-bytes": (AccessRules(1, 8, unaligned=True), AccessRules(1, 1)),
    "widened-4": (AccessRules(1, 4, unaligned=True), AccessRules(4, 4)),
    "qemu-defaults": (AccessRules(), AccessRules()),
    "halves": (AccessRules(2, 8), AccessRules(2, 2)),
}


def exercise(ops: MemoryRegionOps) -> list:
    """Every size at every offset, written then read, through dispatch, AS read/write and the fast path."""
    region = MemoryRegion.io("dev", SIZE, ops)
    root = MemoryRegion.container("root", 1 << 16)
    root.add_subregion(0x1000, region)
    space = memapi.AddressSpace(root, "styles")
    out = []
    for size in (1, 2, 4, 8):
        for offset in range(0, SIZE - size + 1):
            value = int.from_bytes(bytes((offset * 0x11 + i * 0x3B + size) & 0xFF for i in range(size)), "little")
            out.append(memapi.dispatch_write(region, offset, value, size))
            out.append(memapi.dispatch_read(region, offset, size))
            out.append(space.write(0x1000 + offset, (~value & ((1 << 8 * size) - 1)).to_bytes(size, "little")))
            out.append(space.read(0x1000 + offset, size))
            out.append(space.store(0x1000 + offset, value ^ 0x5A, size))
            out.append(space.load(0x1000 + offset, size))
    space.destroy()
    return out


@pytest.mark.parametrize("unknown", list(Unknown))
@pytest.mark.parametrize("endianness", [Endianness.LITTLE, Endianness.BIG])
@pytest.mark.parametrize("rules", RULES)
def test_three_styles_agree(rules, endianness, unknown):
    valid, impl = RULES[rules]
    results = {}
    for name, build in STYLES.items():
        log: list = []
        ops, state = build(endianness, valid, impl, unknown, log)
        results[name] = (exercise(ops), log, state())
    reference = results["classic"]
    refused = any(r[1] & MemTxResult.DECODE_ERROR for r in reference[0] if isinstance(r, tuple))
    assert refused == (unknown is Unknown.ERROR or rules not in ("direct", "split-bytes"))
    for name in ("transaction", "table"):
        assert results[name][0] == reference[0], name
        assert results[name][1] == reference[1], name
        assert results[name][2] == reference[2], name


def test_transaction_result_and_attrs_reach_the_guest():
    seen = []

    def handler(tx):
        seen.append((tx.is_write, tx.attrs.requester_id))
        if tx.address == 4:
            tx.result = MemTxResult.ERROR
        tx.data = 0x77

    region = MemoryRegion.io("tx", 8, memapi.transaction_ops(handler))
    attrs = memapi.MemTxAttrs(requester_id=9)
    assert memapi.dispatch_read(region, 0, 1, attrs) == (0x77, MemTxResult.OK)
    assert memapi.dispatch_read(region, 4, 4, attrs) == (0x77, MemTxResult.ERROR)
    assert memapi.dispatch_write(region, 4, 1, 2, attrs) == MemTxResult.ERROR
    assert seen == [(False, 9), (False, 9), (True, 9)]


# ------------------------------------------------------------------ the register table, table-driven
class Uart:
    """A register-table device with hooks: a self-clearing command register and a clear-on-read latch."""

    def __init__(self, unknown: Unknown = Unknown.IGNORE) -> None:
        self.commands: list[tuple] = []
        self.table = RegisterTable([
            Register("ID", 0x00, 4, reset=0x4B564D53, ro_mask=0xFFFFFFFF),
            Register("CTRL", 0x04, 4, reset=0x00000001),
            Register("STATUS", 0x08, 4, reset=0x000000F3, ro_mask=0x03, w1c_mask=0xF0),
            Register("IRQ", 0x0C, 2, reset=0x8001, ro_mask=0x8000, w1c_mask=0x0001),
            Register("DATA", 0x0E, 1, reset=0xA5),
            Register("WIDE", 0x10, 8, reset=0x0123456789ABCDEF, ro_mask=0xFFFF000000000000),
            Register("CMD", 0x18, 4, on_write=self.command),
            Register("LATCH", 0x1C, 4, reset=0x5, ro_mask=0xFFFFFFFF, on_read=self.latch),
        ], unknown=unknown, endianness=Endianness.LITTLE)
        self.region = MemoryRegion.io("uart", 0x40, self.table.ops)
        self.root = MemoryRegion.container("root", 1 << 20)
        self.root.add_subregion(0x9000, self.region)
        self.space = memapi.AddressSpace(self.root, "uart-as")

    def command(self, mr, reg, old, new):
        self.commands.append((mr.name, reg.name, old, new))
        return 0  # self-clearing

    def latch(self, mr, reg, value):
        self.table["LATCH"] = 0  # clear on read
        return value


@pytest.fixture
def uart():
    dev = Uart()
    yield dev
    dev.space.destroy()


# name, width, reset read, after writing all ones, after then writing zeros
REGISTER_CASES = [
    ("ID", 4, 0x4B564D53, 0x4B564D53, 0x4B564D53),
    ("CTRL", 4, 0x00000001, 0xFFFFFFFF, 0x00000000),
    ("STATUS", 4, 0x000000F3, 0xFFFFFF0F, 0x00000003),
    ("IRQ", 2, 0x8001, 0xFFFE, 0x8000),
    ("DATA", 1, 0xA5, 0xFF, 0x00),
    ("WIDE", 8, 0x0123456789ABCDEF, 0x0123FFFFFFFFFFFF, 0x0123000000000000),
    ("CMD", 4, 0, 0, 0),
    ("LATCH", 4, 0x5, 0, 0),
]


@pytest.mark.parametrize("name, width, reset, ones, zeros", REGISTER_CASES)
def test_every_register_reset_masks_and_hooks(uart, name, width, reset, ones, zeros):
    reg = next(r for r in uart.table.registers if r.name == name)
    addr = 0x9000 + reg.offset
    assert reg.width == width
    assert uart.space.load(addr, width) == reset
    uart.space.store(addr, (1 << 8 * width) - 1, width)
    assert uart.table[name] == ones
    uart.space.store(addr, 0, width)
    assert uart.space.load(addr, width) == zeros
    if name == "CMD":
        assert uart.commands == [("uart", "CMD", 0, 0xFFFFFFFF), ("uart", "CMD", 0, 0)]
    uart.table.reset()
    assert uart.table[name] == reset


def test_partial_and_spanning_accesses_use_byte_lanes(uart):
    assert uart.space.read_int(0x9001, 2) == 0x564D  # the middle of ID
    assert uart.space.read_int(0x900C, 4) == 0xA58001  # IRQ then DATA
    uart.space.write_int(0x9009, 0xFF, 1)  # STATUS byte 1: plain bits only
    assert uart.table["STATUS"] == 0xFFF3
    uart.space.write_int(0x9008, 0x10, 1)  # write 1 clears one w1c bit
    assert uart.table["STATUS"] == 0xFFE3
    assert uart.commands == []


def test_clear_on_read_latch(uart):
    assert [uart.space.load(0x901C, 4) for _ in range(2)] == [5, 0]


@pytest.mark.parametrize("unknown, value, result", [
    (Unknown.IGNORE, 0, MemTxResult.OK),
    (Unknown.ALL_ONES, 0xFFFFFFFF, MemTxResult.OK),
    (Unknown.ERROR, 0, MemTxResult.DECODE_ERROR),
])
def test_unknown_offsets_follow_the_policy(unknown, value, result):
    dev = Uart(unknown)
    before = dev.table.values()
    assert dev.space.read(0x9020, 4) == (value.to_bytes(4, "little"), result)
    assert dev.space.write_int(0x9024, 0x12345678, 4) == result
    assert dev.table.values() == before
    half = dev.space.read(0x901E, 4)  # half LATCH, half nothing
    assert half[1] == result
    dev.space.destroy()


def test_dump_lists_every_register(uart):
    uart.space.store(0x9004, 0x42, 4)
    assert uart.table.dump() == (
        "0x0000  ID      32-bit  0x4b564d53\n"
        "0x0004  CTRL    32-bit  0x00000042\n"
        "0x0008  STATUS  32-bit  0x000000f3\n"
        "0x000c  IRQ     16-bit  0x8001\n"
        "0x000e  DATA     8-bit  0xa5\n"
        "0x0010  WIDE    64-bit  0x0123456789abcdef\n"
        "0x0018  CMD     32-bit  0x00000000\n"
        "0x001c  LATCH   32-bit  0x00000005\n")
    assert list(uart.table.values())[:2] == ["ID", "CTRL"]


@pytest.mark.parametrize("make, rule", [
    (lambda: Register("X", 0, 3), "'X' at 0: width 3"),
    (lambda: Register("X", 0, 1, reset=0x100), "reset 256 does not fit in 1 bytes"),
    (lambda: Register("X", 0, 4, ro_mask=1, w1c_mask=3), "share bits 0x1"),
    (lambda: Register("", 0), "non-empty string"),
    (lambda: Register("X", -4), "64-bit unsigned"),
    (lambda: Register("X", 0, on_read=5), "on_read is not callable"),
    (lambda: RegisterTable([Register("A", 0, 4), Register("B", 2, 2)]), "'B' at 0x2 overlaps 'A' at 0x0"),
    (lambda: RegisterTable([Register("A", 0, 4), Register("A", 4, 4)]), "name 'A' .* used twice"),
    (lambda: RegisterTable([Register("A", 0)], unknown="ignore"), "not an Unknown member"),
    (lambda: RegisterTable(["A"]), "is not a Register"),
])
def test_bad_declarations_are_refused(make, rule):
    with pytest.raises(memapi.InvalidRangeError, match=rule):
        make()


def test_device_side_access_checks_names_and_widths(uart):
    with pytest.raises(memapi.UnknownRegisterError, match="'NOPE'"):
        uart.table["NOPE"]
    with pytest.raises(memapi.InvalidRangeError, match="'DATA' at 0xe: value 256"):
        uart.table["DATA"] = 0x100
    assert uart.table["DATA"] == 0xA5
