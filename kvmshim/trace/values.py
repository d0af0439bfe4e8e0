"""Decoded values that print like strace but stay plain ints and lists for JSON and comparisons."""
from __future__ import annotations

from typing import Any

CData = Any


class Hex(int):
    """An int shown in hex."""

    def __repr__(self) -> str:
        return hex(self)

    __str__ = __repr__


class PageList(list[int]):
    """Page numbers, shown as ranges: ``[0-3, 7]``."""

    def __str__(self) -> str:
        spans: list[list[int]] = []
        for page in self:
            if spans and page == spans[-1][1] + 1:
                spans[-1][1] = page
            else:
                spans.append([page, page])
        return "[" + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) + "]"


def fields(obj: CData, *names: str, hex_: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named fields of a cffi struct; those in *hex_* as Hex."""
    return {n: Hex(getattr(obj, n)) if n in hex_ else getattr(obj, n) for n in names}


def hexed(value: Any) -> Any:
    """*value* with every int inside it (dict values, list items) as Hex."""
    if isinstance(value, dict):
        return {k: hexed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hexed(v) for v in value]
    return Hex(value) if isinstance(value, int) else value
