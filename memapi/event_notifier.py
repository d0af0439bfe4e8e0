"""EventNotifier: an eventfd to hand to ``MemoryRegion.add_eventfd`` (QEMU's EventNotifier).

Anything with ``fileno()`` can be an ioeventfd notifier; this one also lets the
host consume signals. It is non-blocking, so it fits ``selectors`` (register it
directly) and asyncio (``await notifier.wait()`` or ``loop.add_reader``).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class EventNotifier:
    """A non-blocking, close-on-exec eventfd counter; ``set()`` adds one, reads take the total."""

    def __init__(self, initial: bool = False) -> None:
        self._fd = os.eventfd(int(initial), os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("EventNotifier is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def set(self) -> None:
        """Signal the notifier (what a matching guest write does inside KVM)."""
        os.eventfd_write(self.fileno(), 1)

    def read(self) -> int:
        """Take and return the count of signals since the last read (0 if none)."""
        try:
            return os.eventfd_read(self.fileno())
        except BlockingIOError:
            return 0

    def test_and_clear(self) -> bool:
        """True if it was signalled since the last read; clears it."""
        return self.read() > 0

    async def wait(self) -> int:
        """Wait in the running asyncio loop until signalled; returns the count taken."""
        import asyncio  # only here: importing asyncio costs most of memapi's import time

        loop = asyncio.get_running_loop()
        while True:
            count = self.read()
            if count:
                return count
            ready = loop.create_future()
            loop.add_reader(self.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EventNotifier fd={self._fd}>"


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
