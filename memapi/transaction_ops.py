"""One-callback MMIO: ``handler(tx)`` serves reads and writes through a MemoryTransaction.

``transaction_ops`` builds ordinary MemoryRegionOps (the attrs-taking forms), so the
valid/impl rules, splitting, widening and endianness are dispatch's, unchanged: the
handler sees exactly the sub-accesses a read/write pair would see.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .ops import UNSPECIFIED, AccessRules, Endianness, MemoryRegionOps, MemTxAttrs, MemTxResult

if TYPE_CHECKING:
    from .region import MemoryRegion


@dataclass(slots=True)
class MemoryTransaction:
    """One access as the device sees it; a read's handler sets ``data`` (and ``result`` on failure)."""

    mr: MemoryRegion
    address: int  # offset in ``mr``
    size: int
    is_write: bool
    data: int = 0  # the value written, or the value to return for a read
    attrs: MemTxAttrs = UNSPECIFIED
    result: MemTxResult = MemTxResult.OK


Handler = Callable[[MemoryTransaction], None]


def transaction_ops(handler: Handler, *, endianness: Endianness = Endianness.NATIVE,
                    valid: AccessRules = AccessRules(), impl: AccessRules = AccessRules()) -> MemoryRegionOps:
    """MemoryRegionOps that hand every (sub-)access to ``handler`` as a MemoryTransaction."""

    def read(mr: MemoryRegion, offset: int, size: int, attrs: MemTxAttrs) -> tuple[int, MemTxResult]:
        tx = MemoryTransaction(mr, offset, size, False, 0, attrs)
        handler(tx)
        return tx.data, tx.result

    def write(mr: MemoryRegion, offset: int, value: int, size: int, attrs: MemTxAttrs) -> MemTxResult:
        tx = MemoryTransaction(mr, offset, size, True, value, attrs)
        handler(tx)
        return tx.result

    return MemoryRegionOps(read_with_attrs=read, write_with_attrs=write, endianness=endianness,
                           valid=valid, impl=impl)
