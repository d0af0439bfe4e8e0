"""A 16550A UART as QEMU's hw/char/serial.c models it: ``serial``, 8 ports (COM1 at 0x3f8, IRQ 4).

Transmission is instant: a THR write reaches ``on_output`` at once and LSR shows THRE/TEMT
again, so guests that poll LSR bit 5 before each byte never wait. The 16-byte FIFOs,
trigger levels, interrupt priorities (line status > character timeout > received data >
THR empty > modem status), loopback and the divisor latch follow QEMU. Without a clock the
character timeout is "the line went idle": it becomes pending when the receive FIFO holds
data and the input source has nothing more to send.

Input arrives from an ``input`` source (kvmshim.console) through ``pump()``, which any
thread may call: guest accesses and host input are serialised by one lock. The interrupt
line is driven through ``set_irq(level)``, called only when the level changes.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from memapi import AccessRules, Endianness, MemoryRegion, MemoryRegionOps

from .migration.vmstate import VMStateDescription

COM1, COM1_IRQ = 0x3F8, 4
FIFO_SIZE = 16

RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_ID, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_CTI = 0x01, 0x06, 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_FIFO_ENABLED = 0xC0
FCR_FE, FCR_RFR, FCR_XFR, FCR_KEPT = 0x01, 0x02, 0x04, 0xC9
LCR_DLAB = 0x80
MCR_LOOP, MCR_OUT2 = 0x10, 0x08
LSR_DR, LSR_OE, LSR_BI, LSR_THRE, LSR_TEMT, LSR_INT_ANY = 0x01, 0x02, 0x10, 0x20, 0x40, 0x1E
MSR_DCD, MSR_DSR, MSR_CTS, MSR_ANY_DELTA = 0x80, 0x20, 0x10, 0x0F
#: FCR bits 7:6 -> receive trigger level.
TRIGGER_LEVELS = (1, 4, 8, 14)
DEFAULT_DIVISOR = 0x0C  # 9600 baud


class InputSource(Protocol):
    """What feeds the receive side (kvmshim.console): bytes the host has ready, taken without blocking."""

    def take(self, limit: int) -> bytes: ...

    def pending(self) -> int: ...


class Uart16550:
    """One UART. ``output`` collects everything transmitted (not looped back)."""

    #: QEMU's vmstate_serial: the registers, the receive FIFO and the pending interrupt sources.
    vmstate = VMStateDescription("serial", fields=(
        "rbr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr", "fcr", "divisor", "rx", "trigger",
        "thr_ipending", "timeout_ipending", "_irq_level"))

    def __init__(self, set_irq: Callable[[int], None] | None = None,
                 on_output: Callable[[bytes], None] | None = None, *, name: str = "serial") -> None:
        self.set_irq = set_irq
        self.on_output = on_output
        self.input: InputSource | None = None
        self.output = bytearray()
        self.lock = threading.RLock()
        self._irq_level = 0
        self.reset()
        ops = MemoryRegionOps(read=self._read, write=self._write, endianness=Endianness.LITTLE,
                              valid=AccessRules(1, 1), impl=AccessRules(1, 1))
        self.region = MemoryRegion.io(name, 8, ops)

    def map(self, io: MemoryRegion, base: int = COM1) -> None:
        io.add_subregion(base, self.region)

    def reset(self) -> None:
        """serial_reset: 9600 8N1, OUT2 set, THR empty, DCD/DSR/CTS asserted, FIFOs off and empty."""
        with self.lock:
            self.rbr = self.ier = self.lcr = self.scr = self.fcr = 0
            self.iir = IIR_NO_INT
            self.lsr = LSR_TEMT | LSR_THRE
            self.msr = MSR_DCD | MSR_DSR | MSR_CTS
            self.mcr = MCR_OUT2
            self.divisor = DEFAULT_DIVISOR
            self.rx: deque[int] = deque()
            self.trigger = 1
            self.thr_ipending = self.timeout_ipending = False
            self._update_irq()

    # ------------------------------------------------------------------ host side
    def can_receive(self) -> int:
        """How many bytes the receiver takes now (serial_can_receive: up to the trigger level, then one)."""
        with self.lock:
            if not self.fcr & FCR_FE:
                return 0 if self.lsr & LSR_DR else 1
            if len(self.rx) >= FIFO_SIZE:
                return 0
            return self.trigger - len(self.rx) if len(self.rx) <= self.trigger else 1

    def receive(self, data: bytes) -> None:
        """Bytes arriving on the line; past a full FIFO (or an unread RBR) they are lost with LSR.OE."""
        with self.lock:
            for byte in data:
                self._receive1(byte)
            self._idle_check()
            self._update_irq()

    def pump(self) -> None:
        """Move what ``input`` has ready into the receiver (nothing while in loopback, which hears only itself)."""
        with self.lock:
            self._refill()

    def post_load(self) -> None:
        """After migration: check the FIFO and trigger level, and drive the line to the state loaded."""
        if len(self.rx) > FIFO_SIZE or any(not 0 <= byte <= 0xFF for byte in self.rx):
            raise ValueError(f"serial: receive FIFO of {len(self.rx)} entries ({FIFO_SIZE} at most, bytes)")
        if self.trigger not in TRIGGER_LEVELS:
            raise ValueError(f"serial: trigger level {self.trigger!r} (one of {TRIGGER_LEVELS})")
        if self._irq_level and self.set_irq is not None:
            self.set_irq(1)

    @property
    def baud(self) -> int:
        return 115200 // self.divisor if self.divisor else 0

    # ------------------------------------------------------------------ internals
    def _receive1(self, byte: int) -> None:
        if self.fcr & FCR_FE:
            if len(self.rx) < FIFO_SIZE:
                self.rx.append(byte)
            else:
                self.lsr |= LSR_OE  # overruns keep the FIFO's contents
        else:
            if self.lsr & LSR_DR:
                self.lsr |= LSR_OE
            self.rbr = byte
        self.lsr |= LSR_DR

    def _refill(self) -> None:
        source = self.input
        if source is not None and not self.mcr & MCR_LOOP:
            while True:
                room = self.can_receive()
                data = source.take(room) if room else b""
                if not data:
                    break
                for byte in data:
                    self._receive1(byte)
        self._idle_check()
        self._update_irq()

    def _idle_check(self) -> None:
        """The character timeout: FIFO data waiting and nothing more coming down the line."""
        source = self.input
        idle = source is None or self.mcr & MCR_LOOP or not source.pending()
        self.timeout_ipending = bool(self.fcr & FCR_FE and self.rx and idle)

    def _update_irq(self) -> None:
        """serial_update_irq: the highest-priority pending source goes into IIR; the line follows."""
        ier, lsr = self.ier, self.lsr
        if ier & IER_RLSI and lsr & LSR_INT_ANY:
            ident = IIR_RLSI
        elif ier & IER_RDI and self.timeout_ipending:
            ident = IIR_CTI
        elif ier & IER_RDI and lsr & LSR_DR and (not self.fcr & FCR_FE or len(self.rx) >= self.trigger):
            ident = IIR_RDI
        elif ier & IER_THRI and self.thr_ipending:
            ident = IIR_THRI
        elif ier & IER_MSI and self.msr & MSR_ANY_DELTA:
            ident = IIR_MSI
        else:
            ident = IIR_NO_INT
        self.iir = ident | self.iir & 0xF0
        level = int(ident != IIR_NO_INT)
        if level != self._irq_level:
            self._irq_level = level
            if self.set_irq is not None:
                self.set_irq(level)

    def _transmit(self, byte: int) -> None:
        """serial_xmit, instantly: the shift register empties at once; loopback feeds the receiver."""
        self.lsr |= LSR_THRE
        if not self.thr_ipending:
            self.thr_ipending = True
            self._update_irq()
        if self.mcr & MCR_LOOP:
            self._receive1(byte)
            self._idle_check()
            self._update_irq()
        else:
            self.output.append(byte)
            if self.on_output is not None:
                self.on_output(bytes((byte,)))
        self.lsr |= LSR_TEMT

    def _write_fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_FE:
            value |= FCR_XFR | FCR_RFR  # switching the FIFOs on or off empties them
        if value & FCR_RFR:
            self.lsr &= ~(LSR_DR | LSR_BI)
            self.timeout_ipending = False
            self.rx.clear()
        if value & FCR_XFR:
            self.lsr |= LSR_THRE
            self.thr_ipending = True
        self.fcr = value & FCR_KEPT
        if self.fcr & FCR_FE:
            self.iir |= IIR_FIFO_ENABLED
            self.trigger = TRIGGER_LEVELS[self.fcr >> 6]
        else:
            self.iir &= ~IIR_FIFO_ENABLED
        self._update_irq()

    # ------------------------------------------------------------------ guest side
    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        with self.lock:
            if offset == LSR:
                value = self.lsr
                if value & (LSR_BI | LSR_OE):  # reading LSR clears break and overrun
                    self.lsr &= ~(LSR_BI | LSR_OE)
                    self._update_irq()
                return value
            if offset == RBR_THR:
                return self.divisor & 0xFF if self.lcr & LCR_DLAB else self._read_rbr()
            if offset == IER:
                return self.divisor >> 8 if self.lcr & LCR_DLAB else self.ier
            if offset == IIR_FCR:
                value = self.iir
                if (value & IIR_ID) == IIR_THRI:
                    self.thr_ipending = False
                    self._update_irq()
                return value
            if offset == LCR:
                return self.lcr
            if offset == MCR:
                return self.mcr
            if offset == MSR:
                return self._read_msr()
            return self.scr

    def _read_rbr(self) -> int:
        if self.fcr & FCR_FE:
            value = self.rx.popleft() if self.rx else 0
            if not self.rx:
                self.lsr &= ~(LSR_DR | LSR_BI)
        else:
            value = self.rbr
            self.lsr &= ~(LSR_DR | LSR_BI)
        self._refill()
        return value

    def _read_msr(self) -> int:
        if self.mcr & MCR_LOOP:  # the modem outputs wired back to the inputs
            return (self.mcr & 0x0C) << 4 | (self.mcr & 0x02) << 3 | (self.mcr & 0x01) << 5
        value = self.msr
        if value & MSR_ANY_DELTA:
            self.msr &= 0xF0
            self._update_irq()
        return value

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        with self.lock:
            if offset == RBR_THR:
                if self.lcr & LCR_DLAB:
                    self.divisor = self.divisor & 0xFF00 | value
                    return
                self.thr_ipending = False
                self.lsr &= ~(LSR_THRE | LSR_TEMT)
                self._update_irq()
                self._transmit(value)
            elif offset == IER:
                if self.lcr & LCR_DLAB:
                    self.divisor = self.divisor & 0xFF | value << 8
                    return
                changed = (self.ier ^ value) & 0x0F
                self.ier = value & 0x0F
                if changed & IER_THRI:  # enabling THRI with THR empty raises it (Windows relies on this)
                    self.thr_ipending = bool(self.ier & IER_THRI and self.lsr & LSR_THRE)
                if changed:
                    self._update_irq()
            elif offset == IIR_FCR:
                self._write_fcr(value)
                self._refill()
            elif offset == LCR:
                self.lcr = value
            elif offset == MCR:
                was_loop = self.mcr & MCR_LOOP
                self.mcr = value & 0x1F
                if was_loop and not self.mcr & MCR_LOOP:
                    self._refill()
            elif offset == SCR:
                self.scr = value
