"""GSI routing entries for KVM_SET_GSI_ROUTING: a GSI to an irqchip pin or to an MSI."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._cdata import CData, new_flex
from ._kvm_cffi import lib
from .constants import IrqchipId, IrqRoutingType


@dataclass(frozen=True)
class IrqchipRoute:
    """GSI *gsi* raises *pin* of *irqchip* (a PIC: pins 0-7, the IOAPIC: 0-23)."""

    gsi: int
    irqchip: IrqchipId
    pin: int


@dataclass(frozen=True)
class MsiRoute:
    """GSI *gsi* sends the MSI (*address*, *data*), with *devid* where the VM needs one."""

    gsi: int
    address: int
    data: int
    devid: int | None = None


Route = IrqchipRoute | MsiRoute


def describe(route: Route) -> str:
    if isinstance(route, IrqchipRoute):
        return f"gsi={route.gsi}->{IrqchipId(route.irqchip).name}:{route.pin}"
    return f"gsi={route.gsi}->msi({route.address:#x}, {route.data:#x})"


def routing_table(routes: Sequence[Route]) -> CData:
    """A ``struct kvm_irq_routing *`` holding *routes* (the whole table: KVM replaces it)."""
    table = new_flex("struct kvm_irq_routing", len(routes))
    table.nr = len(routes)
    for entry, route in zip(table.entries, routes, strict=True):
        if not isinstance(route, (IrqchipRoute, MsiRoute)):
            raise TypeError(f"KVM_SET_GSI_ROUTING: {route!r} is neither an IrqchipRoute nor an MsiRoute")
        entry.gsi = route.gsi
        if isinstance(route, IrqchipRoute):
            entry.type = IrqRoutingType.IRQCHIP
            entry.u.irqchip.irqchip, entry.u.irqchip.pin = route.irqchip, route.pin
        else:
            entry.type = IrqRoutingType.MSI
            msi = entry.u.msi
            msi.address_lo, msi.address_hi, msi.data = route.address & 0xFFFFFFFF, route.address >> 32, route.data
            if route.devid is not None:
                entry.flags, msi.devid = lib.KVM_MSI_VALID_DEVID, route.devid
    return table
