"""QEMU's character backends for a serial port or debug console: ``stdio``, ``file``, ``null``.

``open_chardevs(stack, machine, quit)`` connects each of a PcMachine's serial ports and debug
consoles to the backend its QemuConfig names, registering the clean-up (terminal mode, files)
on ``stack``. Only one device may read stdin, as in QEMU: the first stdio serial port.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, TextIO

from .console import StdinConsole
from .machine import stdout_writer
from .qemu_config import Chardev, IsaDebugcon

if TYPE_CHECKING:
    from .pc.machine import PcMachine

Sink = Callable[[bytes], None] | None


def sink(stack: ExitStack, spec: Chardev, stdout: Callable[[bytes], None] = stdout_writer) -> Sink:
    """Where bytes written to ``spec`` go: stdout, an open file (closed by ``stack``), or nowhere."""
    if spec.backend == "stdio":
        return stdout
    if spec.backend == "file" and spec.path is not None:
        out = stack.enter_context(open(spec.path, "wb"))  # noqa: SIM115 - the ExitStack closes it

        def write(data: bytes, out: IO[bytes] = out) -> None:
            out.write(data)
            out.flush()

        return write
    return None  # null, none, vc: kvmshim has no virtual console


def open_chardevs(stack: ExitStack, machine: PcMachine, quit: Callable[[], None],
                  stdin: TextIO | None = None) -> StdinConsole | None:
    """Connect ``machine.board``'s serial ports and debug consoles to the backends of its config;
    returns the console reading stdin, if a stdio serial port has one (on a mux'd one, ``mon:stdio``
    or ``-nographic``'s, Ctrl-A x calls ``quit``)."""
    board, config = machine.board, machine.config
    console = None
    for uart, spec in zip(board.serials, config.serial, strict=False):  # a fifth -serial has no port
        uart.on_output = sink(stack, spec)
        if spec.backend == "stdio" and console is None:
            fd = None if stdin is None else stdin.fileno()
            console = stack.enter_context(StdinConsole(quit, fd, escapes=spec.mux_monitor))
            console.attach(uart)
    debugcons = [device for device in config.devices if isinstance(device, IsaDebugcon)]
    for debugcon, debugcon_spec in zip(board.debugcons, debugcons, strict=True):
        debugcon.on_output = _chain(debugcon.on_output, sink(stack, debugcon_spec.chardev))
    return console


def _chain(first: Sink, second: Sink) -> Sink:
    """Both sinks (the machine may already watch a console, e.g. for the end of POST)."""
    if first is None or second is None:
        return first or second

    def both(data: bytes) -> None:
        first(data)
        second(data)

    return both

