"""The legacy VGA text screen: the 0xb8000 text buffer, tracked with DIRTY_MEMORY_VGA, and the VGA ports.

As QEMU's VGA does, the buffer's RAM has VGA dirty logging on from the start
(``set_log(True)``) and a refresh takes the bits with ``snapshot_and_clear_dirty``
(through the KVM listener's log_sync when KVM runs the guest): an untouched screen
costs one empty bitmap. The legacy window ``vga-lowmem`` covers 0xa0000-0xbffff as
QEMU's does; only the text window (memory map 3, 32 KiB at 0xb8000) is memory, the
rest reads all ones (no planar graphics modes).

kvmshim loads no VGA BIOS, so the registers start as a VGA BIOS leaves them after
setting mode 3 (80x25 colour text, CRTC at 0x3d4), and a boot sector can write the
buffer and move the cursor straight away. The ports are QEMU's five ``vga`` ranges;
the CRTC, sequencer, graphics and attribute controllers and the DAC keep what the
guest writes; the screen uses the display start, the cursor registers and the
colours the attribute palette and DAC give.
"""
from __future__ import annotations

from dataclasses import dataclass

import memapi
from memapi import AccessRules, DirtyClient, Endianness, MemoryRegion, MemoryRegionOps, RamBlock

from ..migration.vmstate import VMStateDescription, check_index
from .ports import Read, Write, port_region

COLS, ROWS = 80, 25
LOWMEM_BASE, LOWMEM_SIZE = 0xA0000, 0x20000
TEXT_BASE, TEXT_SIZE = 0xB8000, 0x8000
PORTS = ((0x3B4, 2), (0x3BA, 1), (0x3C0, 16), (0x3D4, 2), (0x3DA, 1))  # QEMU's vga_portio_list
#: Mode 3 as a VGA BIOS sets it: misc output, sequencer, CRTC, graphics and attribute controller.
MODE3_MISC = 0x67
MODE3_SEQ = bytes.fromhex("0300030002")
MODE3_CRTC = bytes.fromhex("5f4f50825581bf1f004f0d0e000000009c8e8f281f96b9a3ff")
MODE3_GFX = bytes.fromhex("000000000010 0e00ff")
MODE3_ATTR = bytes.fromhex("000102030405140738393a3b3c3d3e3f0c000f0800")
CR_MAX_SCAN, CR_CURSOR_START, CR_CURSOR_END = 0x09, 0x0A, 0x0B
CR_START_HI, CR_START_LO, CR_CURSOR_HI, CR_CURSOR_LO, CR_VSYNC_END = 0x0C, 0x0D, 0x0E, 0x0F, 0x11
CR11_LOCK, CR07_WRITABLE = 0x80, 0x10  # CR0-CR7 write protect; CR7 bit 4 stays writable
CURSOR_OFF = 0x20
MISC_COLOR = 0x01  # I/O address select: CRTC at 0x3d4 (colour), else 0x3b4 (mono)
ST01_TOGGLE = 0x09  # vertical retrace | display disabled: QEMU's "dumb" retrace flips them per read
AR_COUNT = 0x15
#: The bits each sequencer, graphics and attribute register keeps (the rest read back as 0, as
#: QEMU's sr_mask/gr_mask and its attribute writes force them).
SR_BITS = bytes((0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0xFF))
GR_BITS = bytes((0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF)).ljust(16, b"\0")
AR_BITS = bytes((0x3F,) * 16 + (0xEF, 0xFF, 0x3F, 0x0F, 0x0F))  # palette, mode (no bit 4), ...
#: Code page 437's pictures for the control codes (the VGA font draws them; Python's codec does not).
_CP437_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"

Rgb = tuple[int, int, int]


def glyph(code: int) -> str:
    """The character the VGA font shows for byte ``code`` (code page 437)."""
    if code < 0x20:
        return _CP437_LOW[code]
    return "⌂" if code == 0x7F else bytes((code,)).decode("cp437")


def _ega_dac() -> bytearray:
    """The DAC's first 64 entries after mode 3: the EGA colours (rgbRGB bits, 6-bit levels)."""
    dac = bytearray(3 * 256)
    for i in range(64):
        for channel, (high, low) in enumerate(((2, 5), (1, 4), (0, 3))):
            dac[3 * i + channel] = 0x2A * (i >> high & 1) + 0x15 * (i >> low & 1)
    return dac


@dataclass(frozen=True)
class Screen:
    """One 80x25 text frame: code page 437 codes, attribute bytes (fg low nibble, bg high), the cursor
    (row, column) or None when hidden, its first and last scan line (of 16), and the 16 colours."""

    chars: bytes
    attrs: bytes
    cursor: tuple[int, int] | None
    cursor_lines: tuple[int, int]
    palette: tuple[Rgb, ...]

    def lines(self) -> list[str]:
        """The text, one string per row."""
        return ["".join(glyph(c) for c in self.chars[row * COLS:(row + 1) * COLS]) for row in range(ROWS)]


class VgaText:
    """The text screen: ``map()`` it, let the guest run, and ``refresh()`` for a new Screen when it changed."""

    #: The registers (QEMU's vmstate_vga_common); the buffer is RAM (``vga.text``) and migrates as such.
    vmstate = VMStateDescription("vga", fields=(
        "msr", "fcr", "st01", "cr", "sr", "gr", "ar", "cr_index", "sr_index", "gr_index", "ar_index",
        "ar_flip_flop", "dac", "dac_read", "dac_write", "dac_sub", "dac_state", "dac_cache"))

    def __init__(self) -> None:
        ops = MemoryRegionOps(read=lambda mr, offset, size: (1 << 8 * size) - 1, write=lambda *access: None,
                              endianness=Endianness.LITTLE, impl=AccessRules(1, 4))
        self.lowmem = MemoryRegion.io("vga-lowmem", LOWMEM_SIZE, ops)
        self.text = MemoryRegion.ram("vga.text", TEXT_SIZE)
        self.lowmem.add_subregion(TEXT_BASE - LOWMEM_BASE, self.text)
        self.text.set_log(True)
        self.ports = [(base, port_region("vga", size, self._port_reader(base), self._port_writer(base)))
                      for base, size in PORTS]
        self.msr, self.fcr, self.st01 = MODE3_MISC, 0, 0
        self.cr, self.sr, self.gr, self.ar = bytearray(256), bytearray(8), bytearray(16), bytearray(AR_COUNT)
        self.cr[:len(MODE3_CRTC)], self.sr[:5], self.gr[:9], self.ar[:] = MODE3_CRTC, MODE3_SEQ, MODE3_GFX, MODE3_ATTR
        self.cr_index = self.sr_index = self.gr_index = self.ar_index = 0
        self.ar_flip_flop = 0
        self.dac = _ega_dac()
        self.dac_read = self.dac_write = self.dac_sub = self.dac_state = 0
        self.dac_cache = bytearray(3)
        self._shown: tuple[Screen, bytes] | None = None

    def map(self, memory: MemoryRegion, io: MemoryRegion) -> None:
        """The window at 0xa0000 over ``memory`` (QEMU: priority 1 in the PCI space) and the ports in ``io``."""
        memory.add_subregion_overlap(LOWMEM_BASE, self.lowmem, 1)
        for base, region in self.ports:
            io.add_subregion(base, region)

    @property
    def _text_ram(self) -> RamBlock:
        block = self.text.ram_block
        assert block is not None  # MemoryRegion.ram made it
        return block

    def close(self) -> None:
        """Unmap the buffer's RAM (after the address spaces are gone)."""
        self._text_ram.close()

    def post_load(self) -> None:
        """Check the indices a hostile stream could set past their tables; redraw on the next refresh."""
        for name, value, limit in (("cr_index", self.cr_index, len(self.cr)), ("sr_index", self.sr_index, len(self.sr)),
                                   ("gr_index", self.gr_index, len(self.gr)), ("ar_index", self.ar_index, 0x40),
                                   ("dac_read", self.dac_read, 256), ("dac_write", self.dac_write, 256),
                                   ("dac_sub", self.dac_sub, 3)):
            check_index(f"vga {name}", value, limit)
        self._shown = None

    # ------------------------------------------------------------ the screen
    def screen(self) -> Screen:
        """The frame the registers and the buffer show now."""
        start = self.cr[CR_START_HI] << 8 | self.cr[CR_START_LO]
        data = self._text_ram.read(0, TEXT_SIZE)
        first = 2 * start % TEXT_SIZE
        cells = (data[first:] + data[:first])[:2 * COLS * ROWS]  # the display start wraps in the window
        height = (self.cr[CR_MAX_SCAN] & 0x1F) + 1
        top, bottom = self.cr[CR_CURSOR_START] & 0x1F, min(self.cr[CR_CURSOR_END] & 0x1F, height - 1)
        position = (self.cr[CR_CURSOR_HI] << 8 | self.cr[CR_CURSOR_LO]) - start
        visible = not self.cr[CR_CURSOR_START] & CURSOR_OFF and top <= bottom and 0 <= position < COLS * ROWS
        return Screen(bytes(cells[0::2]), bytes(cells[1::2]), divmod(position, COLS) if visible else None,
                      (top, bottom), tuple(self._colour(i) for i in range(16)))

    def refresh(self) -> Screen | None:
        """A new frame if the guest dirtied the buffer or changed what the registers show, else None.

        QEMU's way: take (and clear) the buffer's DIRTY_MEMORY_VGA bits, then test the displayed pages.
        """
        snapshot = memapi.snapshot_and_clear_dirty(self.text, 0, TEXT_SIZE, DirtyClient.VGA)
        start = 2 * (self.cr[CR_START_HI] << 8 | self.cr[CR_START_LO]) % TEXT_SIZE
        shown = min(2 * COLS * ROWS, TEXT_SIZE - start)
        dirty = snapshot.get_dirty(self.text, start, shown) or (
            shown < 2 * COLS * ROWS and snapshot.get_dirty(self.text, 0, 2 * COLS * ROWS - shown))
        state = bytes(self.cr[CR_MAX_SCAN:CR_CURSOR_LO + 1]) + bytes(self.ar[:16]) + bytes(self.dac)
        if not dirty and self._shown is not None and self._shown[1] == state:
            return None
        screen = self.screen()
        self._shown = (screen, state)
        return screen

    def _colour(self, index: int) -> Rgb:
        """Attribute colour ``index`` through the attribute palette and the DAC (6-bit levels to 8-bit)."""
        entry = self.ar[index] & 0x3F
        r, g, b = (v & 0x3F for v in self.dac[3 * entry:3 * entry + 3])
        return (r << 2 | r >> 4, g << 2 | g >> 4, b << 2 | b >> 4)

    # ------------------------------------------------------------ ports (QEMU's vga_ioport_read/write)
    def _port_reader(self, base: int) -> Read:
        return lambda mr, offset, size: 0xFF if self._unclaimed(base + offset) else self._read(base + offset)

    def _port_writer(self, base: int) -> Write:
        def write(mr: MemoryRegion, offset: int, value: int, size: int) -> None:
            if not self._unclaimed(base + offset):
                self._write(base + offset, value)
        return write

    def _unclaimed(self, port: int) -> bool:
        """QEMU's vga_ioport_invalid: misc output bit 0 decodes the CRTC at 0x3dx (colour) or 0x3bx (mono)."""
        if self.msr & MISC_COLOR:
            return 0x3B0 <= port <= 0x3BF
        return 0x3D0 <= port <= 0x3DF

    def _read(self, port: int) -> int:
        if port in (0x3B4, 0x3D4):
            return self.cr_index
        if port in (0x3B5, 0x3D5):
            return self.cr[self.cr_index]
        if port in (0x3BA, 0x3DA):
            self.st01 ^= ST01_TOGGLE
            self.ar_flip_flop = 0
            return self.st01
        low = port & 0xF  # the others are 0x3c0-0x3cf (PORTS)
        if low == 0x0:
            return 0 if self.ar_flip_flop else self.ar_index
        if low == 0x1:
            index = self.ar_index & 0x1F
            return self.ar[index] if index < AR_COUNT else 0
        if low == 0x9:
            value = self.dac[3 * self.dac_read + self.dac_sub]
            self.dac_sub += 1
            if self.dac_sub == 3:
                self.dac_sub, self.dac_read = 0, (self.dac_read + 1) & 0xFF
            return value
        registers = {0x4: self.sr_index, 0x5: self.sr[self.sr_index], 0x7: self.dac_state,
                     0x8: self.dac_write, 0xA: self.fcr, 0xC: self.msr, 0xE: self.gr_index,
                     0xF: self.gr[self.gr_index]}
        return registers.get(low, 0)  # 0x3c2 is input status 0: no switch sense, no interrupt

    def _write(self, port: int, value: int) -> None:
        if port in (0x3B4, 0x3D4):
            self.cr_index = value
        elif port in (0x3B5, 0x3D5):
            self._write_crtc(value)
        elif port in (0x3BA, 0x3DA):
            self.fcr = value & 0x10
        elif port == 0x3C0:
            if not self.ar_flip_flop:
                self.ar_index = value & 0x3F
            elif (index := self.ar_index & 0x1F) < AR_COUNT:
                self.ar[index] = value & AR_BITS[index]
            self.ar_flip_flop ^= 1
        elif port == 0x3C2:
            self.msr = value & ~0x10
        elif port == 0x3C4:
            self.sr_index = value & 7
        elif port == 0x3C5:
            self.sr[self.sr_index] = value & SR_BITS[self.sr_index]
        elif port in (0x3C7, 0x3C8):
            if port == 0x3C7:
                self.dac_read, self.dac_state = value, 3
            else:
                self.dac_write, self.dac_state = value, 0
            self.dac_sub = 0
        elif port == 0x3C9:
            self._write_dac(value)
        elif port == 0x3CE:
            self.gr_index = value & 0xF
        elif port == 0x3CF:
            self.gr[self.gr_index] = value & GR_BITS[self.gr_index]

    def _write_crtc(self, value: int) -> None:
        if self.cr[CR_VSYNC_END] & CR11_LOCK and self.cr_index <= 7:
            if self.cr_index == 7:
                self.cr[7] = (self.cr[7] & ~CR07_WRITABLE) | (value & CR07_WRITABLE)
            return
        self.cr[self.cr_index] = value

    def _write_dac(self, value: int) -> None:
        self.dac_cache[self.dac_sub] = value
        self.dac_sub += 1
        if self.dac_sub == 3:
            self.dac[3 * self.dac_write:3 * self.dac_write + 3] = self.dac_cache
            self.dac_sub, self.dac_write = 0, (self.dac_write + 1) & 0xFF
