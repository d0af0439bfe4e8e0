"""What a migration, an incoming stream or a snapshot reports: plain dataclasses, ``to_dict()`` for JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoundStats:
    """One pass over the dirty pages: ``index`` 0 sends all RAM; the ``final`` one runs with the vCPUs
    stopped. ``dirty_pages`` are the pages the round found dirty (round 0: all of them) and
    ``dirty_rate`` how many the guest dirtied per second while the round before ran (0 for round 0)."""

    index: int
    pages: int
    zero_pages: int
    bytes: int
    dirty_pages: int
    dirty_rate: float
    ms: float
    throttle: int = 0
    final: bool = False


@dataclass
class MigrationStats:
    uri: str
    ram_bytes: int
    rounds: list[RoundStats] = field(default_factory=list)
    bytes_sent: int = 0
    #: From holding the vCPUs to the destination's LOADED (a file: to its commit); of it, stopping the
    #: vCPUs (``stop_ms``), the final round (its ``ms``) and waiting for the destination (``load_wait_ms``).
    downtime_ms: float = 0.0
    stop_ms: float = 0.0
    load_wait_ms: float = 0.0
    total_ms: float = 0.0
    #: False when the round limit, not the downtime target, ended pre-copy.
    converged: bool = False
    #: True if every page on the destination matched the source's at the stop (None: not checked).
    verified: bool | None = None
    mismatched_pages: int = 0
    verify_ms: float = 0.0
    verify_error: str | None = None
    link_rate: float = 0.0

    @property
    def pages_sent(self) -> int:
        return sum(r.pages for r in self.rounds)

    @property
    def zero_pages(self) -> int:
        return sum(r.zero_pages for r in self.rounds)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(rounds=len(self.rounds), per_round=doc.pop("rounds"), pages_sent=self.pages_sent,
                   zero_pages=self.zero_pages)
        return doc


@dataclass
class IncomingStats:
    """What the destination loaded; ``running`` says which vCPUs to start (they ran on the source)."""

    uri: str
    rounds: int = 0
    pages: int = 0
    bytes_received: int = 0
    running: list[bool] = field(default_factory=list)
    verified: bool | None = None
    mismatched_pages: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
