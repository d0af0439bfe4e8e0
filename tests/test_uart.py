"""The 16550 UART through an I/O AddressSpace (as QEMU's serial.c behaves), its input feeds
(kvmshim.console), and the test machine's guests printing through it on real KVM."""
from __future__ import annotations

import os
import termios
import threading

import pytest

import memapi
from kvmshim.console import ScriptedInput, SerialFeed, StdinConsole, raw_mode
from kvmshim.uart import COM1, Uart16550
from memapi import AddressSpace, MemoryRegion

RBR, IER, IIR, FCR, LCR, MCR, LSR, MSR, SCR = 0, 1, 2, 2, 3, 4, 5, 6, 7
NO_INT, THRI, RDI, RLSI, CTI = 0x01, 0x02, 0x04, 0x06, 0x0C


class Com1:
    """A UART at 0x3f8 with its IRQ levels and output recorded."""

    def __init__(self) -> None:
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.space = AddressSpace(self.io, "I/O")
        self.irq: list[int] = []
        self.out = bytearray()
        self.uart = Uart16550(self.irq.append, on_output=self.out.extend)
        self.uart.map(self.io)

    def read(self, reg: int) -> int:
        return self.space.read_int(COM1 + reg, 1)

    def write(self, reg: int, value: int) -> None:
        self.space.write_int(COM1 + reg, value, 1)

    @property
    def level(self) -> int:
        return self.irq[-1] if self.irq else 0


@pytest.fixture
def com1():
    port = Com1()
    yield port
    port.space.destroy()


def test_reset_state(com1):
    assert [com1.read(r) for r in (IER, IIR, LCR, MCR, LSR, MSR, SCR)] == [0, NO_INT, 0, 0x08, 0x60, 0xB0, 0]
    assert com1.uart.divisor == 0x0C and com1.uart.baud == 9600


def test_polled_transmit(com1):
    for byte in b"hi\n":
        assert com1.read(LSR) & 0x20
        com1.write(RBR, byte)
    assert com1.out == b"hi\n" == com1.uart.output and com1.read(LSR) == 0x60 and com1.irq == []


def test_seabios_and_grub_probes(com1):
    com1.write(IER, 0x02)  # SeaBIOS detect_serial: IER reads back, IIR shows THRE pending
    assert com1.read(IER) == 0x02 and com1.read(IIR) & 0x3F == THRI
    com1.write(IER, 0)
    for value in (0x5A, 0xA5):  # GRUB's scratch-register probe
        com1.write(SCR, value)
        assert com1.read(SCR) == value


def test_divisor_latch(com1):
    com1.write(LCR, 0x83)
    com1.write(RBR, 0x01)
    com1.write(IER, 0x00)
    assert (com1.read(RBR), com1.read(IER)) == (0x01, 0x00)
    com1.write(LCR, 0x03)
    assert com1.uart.baud == 115200 and com1.out == b""  # divisor writes are not data
    com1.write(IER, 0x0F)
    assert com1.read(IER) == 0x0F


def test_thre_interrupt_per_byte(com1):
    com1.write(IER, 0x02)
    assert com1.irq == [1] and com1.read(IIR) == THRI
    assert com1.irq == [1, 0] and com1.read(IIR) == NO_INT  # reading IIR acknowledges THRE
    com1.write(RBR, ord("a"))
    assert com1.irq == [1, 0, 1]  # the byte left at once: THR empty again
    com1.write(RBR, ord("b"))
    assert com1.irq == [1, 0, 1, 0, 1]  # a fresh edge for each byte, as QEMU lowers and raises


def test_receive_without_fifo_and_overrun(com1):
    com1.write(IER, 0x05)  # RDI | RLSI
    com1.uart.receive(b"x")
    assert com1.read(LSR) & 0x01 and com1.read(IIR) == RDI and com1.level == 1
    com1.uart.receive(b"y")  # RBR was not read
    assert com1.read(IIR) == RLSI  # line status outranks data
    assert com1.read(LSR) & 0x02 and not com1.read(LSR) & 0x02  # OE, cleared by reading LSR
    assert com1.read(RBR) == ord("y") and com1.read(IIR) == NO_INT and com1.level == 0


def test_fifo_trigger_levels_and_timeout(com1):
    com1.write(FCR, 0xC7)  # enable and clear, trigger at 14
    assert com1.read(IIR) & 0xC0 == 0xC0
    com1.write(IER, 0x01)
    com1.uart.receive(b"abc")
    assert com1.read(IIR) & 0x0F == CTI  # under the trigger level and the line went idle
    assert bytes(com1.read(RBR) for _ in range(3)) == b"abc" and not com1.read(LSR) & 0x01
    assert com1.read(IIR) & 0x0F == NO_INT
    com1.uart.receive(bytes(range(14)))
    assert com1.read(IIR) & 0x0F == CTI  # timeout outranks the trigger level, as in QEMU
    com1.write(FCR, 0xC3)  # clear the receive FIFO
    assert not com1.read(LSR) & 0x01 and com1.read(IIR) & 0x0F == NO_INT
    for level, fcr in ((1, 0x01), (4, 0x41), (8, 0x81), (14, 0xC1)):
        com1.write(FCR, fcr)
        assert com1.uart.trigger == level


def test_fifo_overrun_keeps_contents(com1):
    com1.write(FCR, 0x01)
    com1.uart.receive(bytes(range(20)))
    assert com1.read(LSR) & 0x03 == 0x03
    assert bytes(com1.read(RBR) for _ in range(16)) == bytes(range(16))
    assert com1.read(RBR) == 0 and not com1.read(LSR) & 0x01


def test_fifo_switch_empties_both(com1):
    com1.write(FCR, 0x01)
    com1.uart.receive(b"zz")
    com1.write(FCR, 0x00)  # turning the FIFOs off flushes them
    assert not com1.read(LSR) & 0x01 and com1.read(IIR) & 0xC0 == 0


def test_loopback(com1):
    com1.write(MCR, 0x10 | 0x0F)
    assert com1.read(MSR) == 0xF0  # DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
    com1.write(RBR, ord("L"))
    assert com1.out == b"" and com1.read(LSR) & 0x01 and com1.read(RBR) == ord("L")
    com1.write(MCR, 0x03)
    assert com1.read(MSR) == 0xB0


def test_feed_paces_input_to_the_receiver(com1):
    feed = SerialFeed()
    feed.attach(com1.uart)
    feed.send(b"hello")
    assert feed.pending() == 4  # without FIFOs one byte waits in RBR
    assert bytes(com1.read(RBR) for _ in range(5)) == b"hello" and feed.pending() == 0
    com1.write(FCR, 0x81)  # trigger 8
    feed.send(bytes(range(40)))
    assert len(com1.uart.rx) == 8 and com1.uart.can_receive() == 0  # QEMU fills up to the trigger level
    got = bytearray()
    while com1.read(LSR) & 0x01:
        got.append(com1.read(RBR))
    assert got == bytes(range(40))


def test_feed_from_another_thread(com1):
    feed = SerialFeed()
    feed.attach(com1.uart)
    com1.write(FCR, 0x01)
    data = bytes(i & 0xFF for i in range(3000))
    sender = threading.Thread(target=lambda: [feed.send(data[i:i + 7]) for i in range(0, len(data), 7)])
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        if com1.read(LSR) & 0x01:
            got.append(com1.read(RBR))
    sender.join()
    assert got == data and not com1.read(LSR) & 0x02  # nothing lost, no overrun


def test_scripted_input_expects_then_sends(com1):
    done = []
    script = ScriptedInput([("login:", b"root\r"), (b"# ", "exit\r"), (b"bye", b"")], on_done=lambda: done.append(1))
    com1.uart.on_output = script.on_output
    script.attach(com1.uart)
    com1.write(FCR, 0x01)

    def guest_prints(text: bytes) -> None:
        for byte in text:
            com1.write(RBR, byte)

    def guest_reads() -> bytes:
        got = bytearray()
        while com1.read(LSR) & 0x01:
            got.append(com1.read(RBR))
        return bytes(got)

    guest_prints(b"logi")
    assert guest_reads() == b""
    guest_prints(b"n: ")
    assert guest_reads() == b"root\r"
    guest_prints(b"login: # ")  # a repeated pattern from before the match does not fire again
    assert guest_reads() == b"exit\r"
    guest_prints(b"bye")
    assert script.done.is_set() and done == [1] and guest_reads() == b""


def test_stdin_console_raw_mode_escapes_and_restore():
    master, slave = os.openpty()
    quits = []
    try:
        before = termios.tcgetattr(slave)
        uart = Uart16550()
        with pytest.raises(RuntimeError), StdinConsole(on_quit=lambda: quits.append(1), fd=slave) as console:
            console.attach(uart)
            uart.receive(b"")  # nothing yet
            assert termios.tcgetattr(slave) == raw_mode(before)
            os.write(master, b"ab\x01\x01c\x01x")
            for _ in range(200):
                if quits:
                    break
                threading.Event().wait(0.01)
            raise RuntimeError("the block ends with an exception")
        assert termios.tcgetattr(slave) == before
        assert quits == [1] and console.quit_requested
        assert bytes([uart.rbr]) == b"a" and console.pending() == 3  # "b", Ctrl-A, "c" still waiting
        assert console.take(8) == b"b\x01c"
    finally:
        os.close(master)
        os.close(slave)


def test_a_console_without_escapes_hands_ctrl_a_to_the_guest():
    """QEMU's plain -serial stdio (no mux): Ctrl-A x is two keys for the guest, not a quit."""
    quits = []
    console = StdinConsole(on_quit=lambda: quits.append(1), fd=0, escapes=False)  # never entered: fd unused
    console.feed_keys(b"a\x01x\x01\x01")
    assert quits == [] and not console.quit_requested and console.take(8) == b"a\x01x\x01\x01"


# ------------------------------------------------------------------ the test machine's guests
@pytest.mark.kvm
@pytest.mark.parametrize("name, text", [("hello", b"Hello from kvmshim guest!\n"), ("strio", b"strio ok!\n")])
def test_guests_print_through_the_16550(name, text):
    from kvmshim.machine import Machine

    with Machine() as m:
        m.io.del_subregion(m.serial.region)
        uart = Uart16550(lambda level: None)
        uart.map(m.io)
        m.load(name)
        m.run(timeout=30)
        assert bytes(uart.output) == text and m.exit_status == 0
