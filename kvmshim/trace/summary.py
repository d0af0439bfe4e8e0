"""Summary: counts per ioctl and per exit reason, and each VM's memslots before teardown."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from .decode import MEMORY_REGION_REQUESTS
from .events import IoctlEvent
from .state import Memslot, SlotTable


class Summary:
    """Fed one event at a time (``add``) or built from a list (``of``)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()  # request name -> calls
        self.errors: Counter[str] = Counter()  # request name -> failed calls
        self.exits: Counter[str] = Counter()  # exit reason -> KVM_RUN returns
        self._tables: dict[int, SlotTable] = {}  # VM serial -> its slots now
        #: VM serial -> its slots when its teardown began (the first delete since its last run or slot
        #: add), copied once then rather than at every KVM_RUN
        self._before_teardown: dict[int, list[Memslot]] = {}

    @classmethod
    def of(cls, events: Iterable[IoctlEvent]) -> Summary:
        summary = cls()
        for event in events:
            summary.add(event)
        return summary

    def add(self, event: IoctlEvent) -> None:
        """Count *event*; a successful KVM_SET_USER_MEMORY_REGION(2) updates its VM's slots."""
        self.calls[event.request] += 1
        if event.errno is not None:
            self.errors[event.request] += 1
        if event.exit is not None:
            self.exits[event.exit["reason"]] += 1
        if event.vm is None:
            return
        table = self._tables.setdefault(event.vm, SlotTable())
        if event.request in MEMORY_REGION_REQUESTS and event.result == 0 and isinstance(event.arg, dict):
            if not event.arg["memory_size"]:  # a delete: teardown, unless the VM adds a slot or runs again
                if event.vm not in self._before_teardown:
                    self._before_teardown[event.vm] = table.table()
                table.apply(event.arg)
                return
            table.apply(event.arg)
        if event.request in (*MEMORY_REGION_REQUESTS, "KVM_RUN"):
            self._before_teardown.pop(event.vm, None)  # not teardown after all

    @property
    def memslots(self) -> dict[int, list[Memslot]]:
        """VM serial -> its slots before teardown: as they stood at the VM's last KVM_RUN or
        slot add, so deletes made while shutting down (kvmshim closes its slots) leave them."""
        return {vm: self._before_teardown[vm] if vm in self._before_teardown else table.table()
                for vm, table in sorted(self._tables.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "errors": dict(self.errors), "exits": dict(self.exits),
                "memslots": {str(vm): [asdict(s) for s in slots] for vm, slots in self.memslots.items()}}
