"""Summary: counts per ioctl and per exit reason, and each VM's memslots at the end."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, Iterable

from .events import IoctlEvent
from .state import Memslot, SlotTable


class Summary:
    """Fed one event at a time (``add``) or built from a list (``of``)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()  # request name -> calls
        self.errors: Counter[str] = Counter()  # request name -> failed calls
        self.exits: Counter[str] = Counter()  # exit reason -> KVM_RUN returns
        self._tables: dict[int, SlotTable] = {}  # VM serial -> its slots

    @classmethod
    def of(cls, events: Iterable[IoctlEvent]) -> "Summary":
        summary = cls()
        for event in events:
            summary.add(event)
        return summary

    def add(self, event: IoctlEvent) -> None:
        """Count *event*; a successful KVM_SET_USER_MEMORY_REGION updates its VM's slots."""
        self.calls[event.request] += 1
        if event.errno is not None:
            self.errors[event.request] += 1
        if event.exit is not None:
            self.exits[event.exit["reason"]] += 1
        if event.vm is not None:
            table = self._tables.setdefault(event.vm, SlotTable())
            if event.request == "KVM_SET_USER_MEMORY_REGION" and event.result == 0 and isinstance(event.arg, dict):
                table.apply(event.arg)

    @property
    def memslots(self) -> dict[int, list[Memslot]]:
        """VM serial -> the slots it had last."""
        return {vm: table.table() for vm, table in sorted(self._tables.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "errors": dict(self.errors), "exits": dict(self.exits),
                "memslots": {str(vm): [asdict(s) for s in slots] for vm, slots in self.memslots.items()}}
