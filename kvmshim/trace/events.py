"""IoctlEvent: one traced ioctl on a KVM fd, decoded, and its JSON form."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class IoctlEvent:
    """An ioctl on a KVM fd. ``arg`` is the decoded argument (a dict for structs),
    ``result`` the return value (-1 with ``errno`` set on failure, None if the task
    died inside the call) and ``exit`` the KVM_RUN exit read from kvm_run."""

    pid: int  # the thread that made the call
    fd: int
    kind: str  # "kvm" (/dev/kvm), "vm" or "vcpu"
    vm: int | None  # serial number of the VM in this trace (0 for the first)
    vcpu: int | None
    request: str
    arg: Any
    result: int | None
    errno: str | None = None
    exit: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """What strace -y would show after the fd: ``kvm``, ``vm`` or ``vcpu0``."""
        return f"vcpu{self.vcpu}" if self.kind == "vcpu" else self.kind

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> IoctlEvent:
        return cls(**json.loads(line))
