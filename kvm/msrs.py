"""MSR access shared by the system fd (feature MSRs) and vCPU fds: KVM_GET/SET_MSRS and the
MSR index lists, with the kernel's partial-success count surfaced as MsrAccessError."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._cdata import CData, new_flex
from ._fd import FdObject
from .errors import MsrAccessError


class MsrIoctls(FdObject):
    """The MSR ioctls; Kvm and Vcpu expose them under their own names."""

    def _index_list(self, name: str) -> list[int]:
        """KVM_GET_MSR_(FEATURE_)INDEX_LIST: the kernel fills ``nmsrs`` on E2BIG."""
        table = self._grow(name, _msr_list, lambda t: int(t.nmsrs), 0)
        return [int(i) for i in table.indices[0:table.nmsrs]]

    def _get_msrs(self, indices: Iterable[int], desc: str) -> dict[int, int]:
        order = list(indices)
        done, count = self._msrs("KVM_GET_MSRS", dict.fromkeys(order, 0), desc)
        if count < len(order):
            raise MsrAccessError("KVM_GET_MSRS", order[count], done, len(order))
        return done

    def _set_msrs(self, values: Mapping[int, int], desc: str) -> None:
        _, count = self._msrs("KVM_SET_MSRS", values, desc)
        if count < len(values):
            order = list(values)
            raise MsrAccessError("KVM_SET_MSRS", order[count], {i: values[i] for i in order[:count]}, len(values))

    def _msrs(self, name: str, values: Mapping[int, int], desc: str) -> tuple[dict[int, int], int]:
        """({index: data} of the processed entries, their count) after *name* on ``{index: data}``.
        The entries are copied out here: a cffi slice would not keep the buffer alive."""
        msrs = new_flex("struct kvm_msrs", len(values))
        msrs.nmsrs = len(values)
        for entry, (index, data) in zip(msrs.entries, values.items(), strict=True):
            entry.index, entry.data = index, data
        done = self._ioctl(name, msrs, f"{desc} nmsrs={len(values)}".strip())
        return {int(e.index): int(e.data) for e in msrs.entries[0:done]}, done


def _msr_list(count: int) -> CData:
    table = new_flex("struct kvm_msr_list", count)
    table.nmsrs = count
    return table
