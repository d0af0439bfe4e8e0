"""vCPU and VM state that KVM copies out and back in (migration): each a struct kept as bytes.

``bytes(state)`` is the struct exactly as the kernel wrote it and ``type(state).from_bytes``
restores it, so a saved state goes back through the matching ``set_*`` call unchanged.
``state.c`` is the cffi struct for any field; ``fields()`` gives them all as plain values;
a few properties name what users look for. Offsets inside the architectural XSAVE image
and the local APIC page follow the Intel SDM (they are not KVM's layout).
"""
from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from ._cdata import CData, to_python
from ._kvm_cffi import ffi
from .constants import IrqchipId

S = TypeVar("S", bound="KvmState")


class KvmState:
    """One ``CTYPE`` struct; its size may exceed ``sizeof`` where KVM says so (XSAVE2)."""

    CTYPE: ClassVar[str]

    def __init__(self, raw: bytes | bytearray | memoryview | None = None, size: int | None = None) -> None:
        size = ffi.sizeof(self.CTYPE) if size is None else size
        if raw is not None:
            size = memoryview(raw).nbytes
        self._check_size(size)
        self._buf = ffi.new("char[]", size)
        if raw is not None:
            ffi.memmove(self._buf, raw, size)
        self.c: CData = ffi.cast(f"{self.CTYPE} *", self._buf)

    @classmethod
    def _check_size(cls, size: int) -> None:
        if size != ffi.sizeof(cls.CTYPE):
            raise ValueError(f"{cls.__name__}: {cls.CTYPE} is {ffi.sizeof(cls.CTYPE)} bytes, got {size}")

    @classmethod
    def from_bytes(cls: type[S], data: bytes | bytearray | memoryview) -> S:
        return cls(data)

    @property
    def size(self) -> int:
        return len(self._buf)

    def __bytes__(self) -> bytes:
        return bytes(ffi.buffer(self._buf))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KvmState) and type(other) is type(self) and bytes(self) == bytes(other)

    def fields(self) -> dict[str, Any]:
        """Every declared field as plain ints, lists and dicts."""
        result: dict[str, Any] = to_python(self.c[0])
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.size} bytes>"


def _u32(buf: CData, offset: int) -> int:
    return int.from_bytes(ffi.buffer(buf)[offset:offset + 4], "little")


class Fpu(KvmState):
    """KVM_GET_FPU / KVM_SET_FPU: x87 and SSE state in FXSAVE terms."""

    CTYPE = "struct kvm_fpu"

    @property
    def fcw(self) -> int:
        return int(self.c.fcw)

    @property
    def mxcsr(self) -> int:
        return int(self.c.mxcsr)

    def xmm(self, n: int) -> bytes:
        return bytes(ffi.buffer(self.c.xmm[n]))


class Xsave(KvmState):
    """KVM_GET_XSAVE(2) / KVM_SET_XSAVE: the XSAVE image (4096 bytes, more with XSAVE2)."""

    CTYPE = "struct kvm_xsave"
    _XSTATE_BV = 512  # XSAVE header, SDM vol. 1 13.4.2
    _MXCSR = 24

    @classmethod
    def _check_size(cls, size: int) -> None:
        if size < ffi.sizeof(cls.CTYPE) or size % 4:
            raise ValueError(f"Xsave: {size} bytes (at least {ffi.sizeof(cls.CTYPE)}, a multiple of 4)")

    @property
    def xstate_bv(self) -> int:
        """The state components the image holds (bit 0 x87, 1 SSE, 2 AVX...)."""
        return _u32(self._buf, self._XSTATE_BV) | _u32(self._buf, self._XSTATE_BV + 4) << 32

    @property
    def mxcsr(self) -> int:
        return _u32(self._buf, self._MXCSR)


class Xcrs(KvmState):
    """KVM_GET_XCRS / KVM_SET_XCRS: the extended control registers (XCR0)."""

    CTYPE = "struct kvm_xcrs"

    @property
    def values(self) -> dict[int, int]:
        """{xcr number: value}."""
        return {int(x.xcr): int(x.value) for x in self.c.xcrs[0:self.c.nr_xcrs]}


class Lapic(KvmState):
    """KVM_GET_LAPIC / KVM_SET_LAPIC: the local APIC register page (32-bit registers)."""

    CTYPE = "struct kvm_lapic_state"
    ID, VERSION, TPR, SPURIOUS, LVT0, LVT1 = 0x20, 0x30, 0x80, 0xF0, 0x350, 0x360

    def register(self, offset: int) -> int:
        return _u32(self._buf, offset)

    def set_register(self, offset: int, value: int) -> None:
        ffi.buffer(self._buf)[offset:offset + 4] = value.to_bytes(4, "little")

    @property
    def apic_id(self) -> int:
        return self.register(self.ID) >> 24


class DebugRegs(KvmState):
    """KVM_GET_DEBUGREGS / KVM_SET_DEBUGREGS: DR0-3, DR6, DR7."""

    CTYPE = "struct kvm_debugregs"

    @property
    def db(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.c.db)

    @property
    def dr6(self) -> int:
        return int(self.c.dr6)

    @property
    def dr7(self) -> int:
        return int(self.c.dr7)


class VcpuEvents(KvmState):
    """KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS: pending exception, interrupt, NMI, SMI, SIPI."""

    CTYPE = "struct kvm_vcpu_events"


class Irqchip(KvmState):
    """KVM_GET_IRQCHIP / KVM_SET_IRQCHIP: one of the PICs or the IOAPIC (``chip_id``)."""

    CTYPE = "struct kvm_irqchip"

    @property
    def chip_id(self) -> IrqchipId:
        return IrqchipId(self.c.chip_id)

    @property
    def pic(self) -> CData:
        """``struct kvm_pic_state`` (imr, irr, isr, irq_base...) of a PIC."""
        return self.c.chip.pic

    @property
    def ioapic(self) -> CData:
        """``struct kvm_ioapic_state`` (id, irr, redirtbl[].bits) of the IOAPIC."""
        return self.c.chip.ioapic

    def redirection(self, pin: int) -> dict[str, int]:
        """An IOAPIC redirection entry decoded (82093AA datasheet bit layout)."""
        bits = int(self.ioapic.redirtbl[pin].bits)
        return {"vector": bits & 0xFF, "delivery_mode": bits >> 8 & 7, "dest_mode": bits >> 11 & 1,
                "polarity": bits >> 13 & 1, "remote_irr": bits >> 14 & 1, "trig_mode": bits >> 15 & 1,
                "mask": bits >> 16 & 1, "dest_id": bits >> 56}


class PitState(KvmState):
    """KVM_GET_PIT2 / KVM_SET_PIT2: the three i8254 channels and the PIT flags."""

    CTYPE = "struct kvm_pit_state2"


class ClockData(KvmState):
    """KVM_GET_CLOCK / KVM_SET_CLOCK: kvmclock in ns (``clock``), with realtime/host_tsc per ``flags``."""

    CTYPE = "struct kvm_clock_data"

    @property
    def clock(self) -> int:
        return int(self.c.clock)
