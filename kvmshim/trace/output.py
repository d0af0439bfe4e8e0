"""LineWriter: trace output in whole lines, one write(2) each, so that the lines never mix
with what the traced program writes to the same terminal or pipe.

Python's buffered streams may split a long line over several writes (and the traced
program's threads keep running meanwhile). A terminal the program switched to raw mode
(QEMU's ``-serial stdio``) has no newline translation: lines then end in CR LF.
"""
from __future__ import annotations

import os
import termios


class LineWriter:
    """Writes lines to the fd *fd* (not owned: the caller closes it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.tty = os.isatty(fd)

    def line(self, text: str) -> None:
        data = (text + self._newline()).encode()
        while data:
            data = data[os.write(self.fd, data):]

    def _newline(self) -> str:
        if not self.tty:
            return "\n"
        try:
            oflag = termios.tcgetattr(self.fd)[1]
        except termios.error:
            return "\n"
        return "\n" if oflag & termios.OPOST and oflag & termios.ONLCR else "\r\n"
