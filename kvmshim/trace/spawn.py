"""Start a command stopped under ptrace (fork, PTRACE_TRACEME, exec)."""
from __future__ import annotations

import os
from collections.abc import Sequence

from ptrace.binding import ptrace_traceme  # type: ignore[import-untyped]  # python-ptrace ships no type hints


class TraceError(OSError):
    """The command could not be started or traced."""


def spawn_traced(argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Fork a child that asks to be traced and execs *argv* (searched on PATH); returns its pid.

    The child stops with SIGTRAP after its exec. If the exec fails, the child exits at once
    (never returning into the caller's Python code) and TraceError says why.
    """
    argv = list(argv)
    read_end, write_end = os.pipe()  # close-on-exec: EOF here means the exec worked
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            ptrace_traceme()
            if env is None:
                os.execvp(argv[0], argv)
            os.execvpe(argv[0], argv, env)
        except BaseException as err:  # report anything, then leave without unwinding
            os.write(write_end, str(err).encode())
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    if message:
        os.waitpid(pid, 0)
        raise TraceError(f"cannot run {argv[0]!r}: {message}")
    return pid
