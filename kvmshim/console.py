"""What a guest's UART hears: the host terminal while a guest runs, or a script for tests.

Both are ``SerialFeed``s, the receive side's input source (``kvmshim.uart.InputSource``):
bytes wait in the feed until the UART has room, and ``send`` (from any thread) wakes the
UART. Typical use::

    uart = Uart16550(set_irq, on_output=stdout_writer)
    with StdinConsole(on_quit=runner.stop) as console:
        console.attach(uart)
        runner.run()

    script = ScriptedInput([(b"command-line", b"c"), (b"grub>", b"")], on_done=runner.stop)
    uart = Uart16550(set_irq, on_output=script.on_output)
    script.attach(uart)
"""
from __future__ import annotations

import os
import select
import sys
import termios
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .uart import InputSource

CTRL_A = 0x01
QUIT = ord("x")
Pattern = bytes | str


class Receiver(Protocol):
    """The UART side a feed drives (kvmshim.uart.Uart16550)."""

    input: InputSource | None

    def pump(self) -> None: ...


class SerialFeed:
    """Bytes waiting to go down the line; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self.uart: Receiver | None = None

    def attach(self, uart: Receiver) -> None:
        """Become ``uart``'s input."""
        self.uart = uart
        uart.input = self
        uart.pump()

    def send(self, data: bytes) -> None:
        with self._lock:
            self._buffer += data
        if self.uart is not None:
            self.uart.pump()

    def take(self, limit: int) -> bytes:
        with self._lock:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
        return data

    def pending(self) -> int:
        return len(self._buffer)


class ScriptedInput(SerialFeed):
    """Expect and send: each step waits until the guest's output since the previous step contains its
    pattern, then sends its reply (which may be empty: a step that only waits). ``done`` is set, and
    ``on_done`` called, once the last step has matched. ``on_output`` is the UART's output callback;
    ``echo`` sees the output too (a terminal, a log)."""

    def __init__(self, steps: Iterable[tuple[Pattern, Pattern]], *, on_done: Callable[[], None] | None = None,
                 echo: Callable[[bytes], None] | None = None) -> None:
        super().__init__()
        self.steps = deque((_bytes(pattern), _bytes(reply)) for pattern, reply in steps)
        self.on_done = on_done
        self.echo = echo
        self.output = bytearray()
        self.done = threading.Event()
        self._unmatched = 0  # where the output not yet consumed by a match starts
        if not self.steps:
            self.done.set()

    def on_output(self, data: bytes) -> None:
        fresh = len(self.output)
        self.output += data
        if self.echo is not None:
            self.echo(data)
        while self.steps:
            pattern, reply = self.steps[0]
            found = self.output.find(pattern, max(self._unmatched, fresh - len(pattern) + 1))
            if found < 0:
                break
            self.steps.popleft()
            self._unmatched = found + len(pattern)
            if reply:
                self.send(reply)
            if not self.steps:
                self.done.set()
                if self.on_done is not None:
                    self.on_done()


class StdinConsole(SerialFeed):
    """The host's stdin for the block: raw mode on a terminal, restored when the block ends however it
    ends, and a reader thread. With ``escapes`` (QEMU's mux, as ``-nographic`` or ``mon:stdio`` give):
    Ctrl-A x calls ``on_quit``, Ctrl-A Ctrl-A sends one Ctrl-A; without, every key reaches the guest,
    as QEMU's plain ``-serial stdio``. Ctrl-C stays the host's interrupt (KeyboardInterrupt), so it
    also restores the terminal."""

    def __init__(self, on_quit: Callable[[], None], fd: int | None = None, *, escapes: bool = True) -> None:
        super().__init__()
        self.on_quit = on_quit
        self.escapes = escapes
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.quit_requested = False
        self._saved: list[Any] | None = None  # termios attributes
        self._escape = False
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    def __enter__(self) -> StdinConsole:
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            termios.tcsetattr(self.fd, termios.TCSADRAIN, raw_mode(self._saved))
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._read_loop, args=(self._wake[0],), name="stdin-console",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._wake is not None:
                os.write(self._wake[1], b"\0")
                if self._thread is not None:
                    self._thread.join(5)
                for fd in self._wake:
                    os.close(fd)
                self._wake = None
        finally:
            if self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
                self._saved = None

    def _read_loop(self, wake: int) -> None:
        while True:
            ready, _, _ = select.select([self.fd, wake], [], [])
            if wake in ready:
                return
            try:
                data = os.read(self.fd, 1024)
            except OSError:
                return
            if not data:
                return
            self.feed_keys(data)

    def feed_keys(self, data: bytes) -> None:
        """Keys typed on the host: escapes handled, the rest sent to the guest."""
        out = bytearray()
        for byte in data:
            if self._escape:
                self._escape = False
                if byte == QUIT:
                    self.quit_requested = True
                    self.on_quit()
                elif byte == CTRL_A:
                    out.append(CTRL_A)
            elif byte == CTRL_A and self.escapes:
                self._escape = True
            else:
                out.append(byte)
        if out:
            self.send(bytes(out))


def raw_mode(attrs: list[Any]) -> list[Any]:
    """QEMU's stdio chardev settings: no input processing, no echo, no line editing; output
    processing and signals (Ctrl-C) kept."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR | termios.IGNCR
               | termios.ICRNL | termios.IXON)
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
    cflag = cflag & ~(termios.CSIZE | termios.PARENB) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    return [iflag, oflag | termios.OPOST, cflag, lflag, ispeed, ospeed, cc]


def _bytes(value: Pattern) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
