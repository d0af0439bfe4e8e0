"""The VGA text screen on the pure memory core (no KVM): the buffer through an AddressSpace, the ports,
and refresh() driven by the DIRTY_MEMORY_VGA bits exactly as QEMU's VGA takes them."""
from __future__ import annotations

import pytest

import memapi
from kvmshim.pc.vga import COLS, ROWS, TEXT_BASE, VgaText, glyph
from memapi import AddressSpace, DirtyClient, MemoryRegion


class Board:
    """A VgaText mapped as the pc machine maps it: over RAM, with an I/O space."""

    def __init__(self) -> None:
        self.system = MemoryRegion.container("system", memapi.UINT64_MAX)
        self.ram = MemoryRegion.ram("ram", 1 << 20)
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.system.add_subregion(0, self.ram)
        self.vga = VgaText()
        self.vga.map(self.system, self.io)
        self.memory = AddressSpace(self.system, "memory")
        self.io_space = AddressSpace(self.io, "I/O")

    def close(self) -> None:
        self.memory.destroy()
        self.io_space.destroy()
        self.vga.close()
        self.ram.ram_block.close()

    def put(self, row: int, col: int, text: str, attr: int = 0x07) -> None:
        data = b"".join(bytes((code, attr)) for code in text.encode("cp437"))
        self.memory.write(TEXT_BASE + 2 * (row * COLS + col), data)

    def out(self, port: int, value: int) -> None:
        self.io_space.write_int(port, value, 1)

    def inb(self, port: int) -> int:
        return self.io_space.read_int(port, 1)

    def crtc(self, index: int, value: int, base: int = 0x3D4) -> None:
        self.out(base, index)
        self.out(base + 1, value)


@pytest.fixture
def board():
    b = Board()
    yield b
    b.close()


def test_buffer_window_and_mode3_screen(board):
    flat = [(r.start, r.end, r.mr.name) for r in board.memory.current_map if 0xA0000 <= r.start < 0xC0000]
    assert flat == [(0xA0000, 0xB8000, "vga-lowmem"), (0xB8000, 0xC0000, "vga.text")]
    assert board.memory.read_int(0xA0000, 4) == 0xFFFFFFFF  # graphics planes are not modelled
    assert board.vga.text.dirty_log_mask & (1 << DirtyClient.VGA)  # logging from the start, as QEMU's VGA
    board.put(0, 0, "Hi", 0x1F)
    board.put(ROWS - 1, COLS - 1, "\x01", 0x4E)
    screen = board.vga.screen()
    assert screen.lines()[0].startswith("Hi") and screen.lines()[-1][-1] == "☺"
    assert screen.attrs[:2] == b"\x1f\x1f" and screen.attrs[-1] == 0x4E
    assert screen.cursor == (0, 0) and screen.cursor_lines == (13, 14)  # mode 3's underline cursor
    assert screen.palette[1] == (0, 0, 0xAA) and screen.palette[6] == (0xAA, 0x55, 0) and screen.palette[15] == (
        0xFF, 0xFF, 0xFF)
    assert glyph(0xDB) == "█" and glyph(0) == " " and glyph(0x7F) == "⌂"


def test_cursor_and_start_address_registers(board):
    board.crtc(0x0E, 0x00)
    board.crtc(0x0F, 2 * COLS + 5)
    assert board.vga.screen().cursor == (2, 5)
    board.out(0x3D4, 0x0F)
    assert board.inb(0x3D5) == 2 * COLS + 5 and board.inb(0x3D4) == 0x0F
    board.crtc(0x0A, 0x00)
    board.crtc(0x0B, 0x0F)
    assert board.vga.screen().cursor_lines == (0, 15)  # a block cursor
    board.crtc(0x0A, 0x20)
    assert board.vga.screen().cursor is None  # cursor off
    board.crtc(0x0A, 0x0E)
    board.crtc(0x0B, 0x0D)
    assert board.vga.screen().cursor is None  # start below end: nothing drawn
    board.put(1, 0, "second row")
    board.crtc(0x0C, 0x00)
    board.crtc(0x0D, COLS)  # display start one row down: the screen scrolls
    assert board.vga.screen().lines()[0].startswith("second row")


def test_colour_and_mono_decode(board):
    assert board.inb(0x3CC) == 0x67  # misc output: colour, so the CRTC answers at 0x3d4
    assert board.inb(0x3B4) == 0xFF  # the mono alias is not decoded
    board.crtc(0x0F, 7, base=0x3B4)  # ignored
    assert board.vga.screen().cursor == (0, 0)
    board.out(0x3C2, 0x66)  # mono
    board.crtc(0x0F, 9, base=0x3B4)
    assert board.vga.screen().cursor == (0, 9) and board.inb(0x3D5) == 0xFF
    board.out(0x3C2, 0x67)


def test_crtc_write_protect_and_retrace(board):
    board.crtc(0x01, 0x00)  # CR11 bit 7 protects CR0-CR7 after mode 3
    board.out(0x3D4, 0x01)
    assert board.inb(0x3D5) == 0x4F
    statuses = {board.inb(0x3DA) & 0x09 for _ in range(4)}
    assert statuses == {0, 0x09}  # retrace polling loops terminate


def test_attribute_controller_and_dac(board):
    board.inb(0x3DA)  # reset the flip-flop
    board.out(0x3C0, 0x01)
    board.out(0x3C0, 0x3F)  # palette 1 -> DAC 0x3f
    board.out(0x3C0, 0x01)
    assert board.inb(0x3C1) == 0x3F
    board.out(0x3C8, 0x3F)
    for level in (0x3F, 0x00, 0x20):
        board.out(0x3C9, level)
    assert board.vga.screen().palette[1] == (0xFF, 0, 0x82)
    board.out(0x3C7, 0x3F)
    assert [board.inb(0x3C9) for _ in range(3)] == [0x3F, 0x00, 0x20] and board.inb(0x3C7) == 3
    board.out(0x3C4, 0x02)
    assert board.inb(0x3C5) == 0x03
    board.out(0x3CE, 0x06)
    assert board.inb(0x3CF) == 0x0E


def test_registers_keep_only_their_bits_as_in_qemu(board):
    """All ones written to every sequencer, graphics and attribute register read back masked as
    QEMU's sr_mask, gr_mask and attribute writes leave them; the PEL mask port reads 0."""
    seen = {}
    for index_port, data_port, count in ((0x3C4, 0x3C5, 8), (0x3CE, 0x3CF, 16)):
        for index in range(count):
            board.out(index_port, index)
            board.out(data_port, 0xFF)
            seen[data_port, index] = board.inb(data_port)
    assert [seen[0x3C5, i] for i in range(8)] == [0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0, 0, 0xFF]
    assert [seen[0x3CF, i] for i in range(16)] == [0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF] + [0] * 7
    attributes = []
    for index in (0x00, 0x0F, 0x10, 0x11, 0x12, 0x13, 0x14):
        board.inb(0x3DA)
        board.out(0x3C0, index)
        board.out(0x3C0, 0xFF)
        board.out(0x3C0, index)
        attributes.append(board.inb(0x3C1))
    assert attributes == [0x3F, 0x3F, 0xEF, 0xFF, 0x3F, 0x0F, 0x0F]
    board.out(0x3C6, 0x12)
    assert board.inb(0x3C6) == 0


def test_refresh_follows_the_vga_dirty_bits(board):
    vga = board.vga
    assert vga.refresh() is not None  # the first frame
    assert vga.refresh() is None  # nothing dirty, no register change
    board.put(3, 3, "x")
    assert vga.refresh().lines()[3][3] == "x"
    assert vga.refresh() is None
    board.memory.write(TEXT_BASE + 0x4000, b"off screen")  # a page the screen does not show
    assert vga.refresh() is None
    board.crtc(0x0F, 1)  # the cursor moves: no page dirty, but a new frame
    assert vga.refresh().cursor == (0, 1)
    # The bits refresh() takes are the VGA client's: MIGRATION's stay for whoever tracks them.
    memapi.global_dirty_log_start(memapi.GlobalDirty.DIRTY_RATE)
    try:
        board.put(0, 0, "m")
        assert vga.refresh() is not None
        migration = memapi.snapshot_and_clear_dirty(vga.text, 0, 0x8000, DirtyClient.MIGRATION)
        assert migration.dirty_pages() == [0]
    finally:
        memapi.global_dirty_log_stop(memapi.GlobalDirty.DIRTY_RATE)
