"""Text output: one strace-like line per ioctl, and the summary tables."""
from __future__ import annotations

import errno as _errno
import os
from typing import Any

from .decode import PageList
from .events import IoctlEvent
from .summary import Summary


def format_value(value: Any) -> str:
    """``{slot=0, flags=READONLY, guest_phys_addr=0xfffc0000}`` for a decoded value."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and not isinstance(value, PageList):
        return "[" + ", ".join(map(format_value, value)) + "]"
    return str(value)


def _result(event: IoctlEvent) -> str:
    if event.result is None:
        return "?"
    if event.errno is not None:
        number = getattr(_errno, event.errno, None)
        return f"-1 {event.errno}" + (f" ({os.strerror(number)})" if number else "")
    if event.request == "KVM_CREATE_VM":
        return f"{event.result}<vm>"
    if event.request == "KVM_CREATE_VCPU":
        return f"{event.result}<vcpu{event.arg}>"
    return str(event.result)


def format_event(event: IoctlEvent, main_pid: int | None = None) -> str:
    """``ioctl(5<vm>, KVM_SET_USER_MEMORY_REGION, {...}) = 0``, prefixed ``[pid N]`` unless
    *pid* is *main_pid*; KVM_RUN adds ``(KVM_EXIT_IO {...})``."""
    prefix = "" if event.pid == main_pid else f"[pid {event.pid}] "
    line = (f"{prefix}ioctl({event.fd}<{event.label}>, {event.request}, "
            f"{format_value(event.arg)}) = {_result(event)}")
    if event.exit is not None:
        details = {k: v for k, v in event.exit.items() if k != "reason"}
        line += f" (KVM_EXIT_{event.exit['reason']}" + (f" {format_value(details)})" if details else ")")
    return line


def format_summary(summary: Summary) -> str:
    """The counts per ioctl and per exit reason, then each VM's memslots, as text tables."""
    lines = [f"{'calls':>8} {'errors':>7}  ioctl"]
    lines += [f"{n:8} {summary.errors[name]:7}  {name}" for name, n in summary.calls.most_common()]
    lines += ["", f"{'exits':>8}  reason"]
    lines += [f"{n:8}  KVM_EXIT_{reason}" for reason, n in summary.exits.most_common()]
    for vm, slots in summary.memslots.items():
        lines += ["", f"memslots of vm {vm}:",
                  f"{'as':>3} {'slot':>5} {'guest_phys_addr':>18} {'memory_size':>18} "
                  f"{'userspace_addr':>18}  flags"]
        lines += [f"{s.as_id:3} {s.slot:5} {s.guest_phys_addr:#18x} {s.memory_size:#18x} "
                  f"{s.userspace_addr:#18x}  {s.flags}" for s in slots]
    return "\n".join(lines) + "\n"
