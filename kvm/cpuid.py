"""CPUID tables as KVM passes them (``struct kvm_cpuid2``), as lists of plain entries."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ._cdata import CData, new_flex
from ._kvm_cffi import lib

#: KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic): the leaf has subleaves selected by ECX.
SIGNIFICANT_INDEX = lib.KVM_CPUID_FLAG_SIGNIFCANT_INDEX


@dataclass(frozen=True)
class CpuidEntry:
    """``struct kvm_cpuid_entry2``: leaf ``function``, subleaf ``index`` and the four registers."""

    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0


_NAMES = [f.name for f in fields(CpuidEntry)]


def entries_of(table: CData) -> list[CpuidEntry]:
    """The ``nent`` entries of a ``struct kvm_cpuid2 *``."""
    return [CpuidEntry(*(int(getattr(e, n)) for n in _NAMES)) for e in table.entries[0:table.nent]]


def new_table(entries: list[CpuidEntry] | int) -> CData:
    """A ``struct kvm_cpuid2 *`` holding *entries*, or room for that many."""
    count = entries if isinstance(entries, int) else len(entries)
    table = new_flex("struct kvm_cpuid2", count)
    table.nent = count
    if not isinstance(entries, int):
        for slot, entry in zip(table.entries, entries, strict=True):
            for name, value in asdict(entry).items():
                setattr(slot, name, value)
    return table
