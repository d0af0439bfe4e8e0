"""Device state: what each device model saves and restores (QEMU's VMStateDescription).

A device class declares ``vmstate = VMStateDescription(name, version, fields=(...))``: the
attributes that make up its guest-visible state. Saving takes each field's value; a field holding
another object with a ``vmstate`` (an IDE channel inside the IDE function) is saved as a nested
dict, as VMSTATE_STRUCT does. Loading checks every value against the field's current one (same
kind of value, same length for a fixed buffer such as a config space, the same keys for a
nested struct) and updates buffers and nested structs in place, so views onto them stay valid;
then the device's ``post_load()`` (if it has one) re-derives what follows from the state: memory
mappings, interrupt lines, ranges it must check. A field may be a property, for state such as
"which unit is selected" that is an object reference in the model.

``find_devices`` lists a machine's devices: those its attributes reach (and the attributes of
kvmshim objects it holds, such as the pc machine's board), in sorted order; then the owners of
the regions in its memory and I/O trees (a region's ``owner``, else the object whose bound
methods serve it) that no device found so far covers, in tree order. So two machines built the
same way list the same devices in the same order; each gets the section name ``NAME/INSTANCE``.
A region served by an object with no vmstate blocks migration: its state would be lost.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from memapi import MemoryRegion

from .errors import MigrationBlocked

_SCALARS = (type(None), bool, int, str, bytes)
_MAX_DEPTH = 8


@dataclass(frozen=True)
class VMStateDescription:
    """A device's state: ``name`` is its section name, ``version`` the layout of ``fields``; a
    stream of a version above ``version`` or below ``minimum_version`` is refused."""

    name: str
    version: int = 1
    fields: tuple[str, ...] = ()
    minimum_version: int = 1

    def accepts(self, version: int) -> bool:
        return self.minimum_version <= version <= self.version


def description(obj: object) -> VMStateDescription | None:
    found = getattr(type(obj), "vmstate", None)
    return found if isinstance(found, VMStateDescription) else None


def declared(device: object) -> VMStateDescription:
    """The description of a device known to have one (found by ``find_devices``, or checked)."""
    vmsd = description(device)
    assert vmsd is not None, f"{type(device).__name__} has no vmstate"
    return vmsd


def save(device: object) -> dict[str, Any]:
    """The device's fields as plain values (None, bool, int, str, bytes, lists, dicts)."""
    vmsd = declared(device)
    return {field: _capture(getattr(device, field), f"{vmsd.name}.{field}") for field in vmsd.fields}


def _capture(value: Any, where: str) -> Any:
    if description(value) is not None:
        return save(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple, deque)):
        return [_capture(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _capture(item, f"{where}[{key!r}]") for key, item in value.items()}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be saved (give the device a property for it)")


def load(device: object, state: Any, where: str) -> None:
    """Restore ``state`` (as ``save`` made it) into ``device``; ValueError or TypeError names the field."""
    vmsd = declared(device)
    if not isinstance(state, dict) or set(state) != set(vmsd.fields):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{where}: fields {got}, expected {sorted(vmsd.fields)}")
    for field in vmsd.fields:
        current = getattr(device, field)
        new = _restore(current, state[field], f"{where}.{field}")
        if new is not current:
            setattr(device, field, new)
    post_load = getattr(device, "post_load", None)
    if post_load is not None:
        post_load()


def _restore(current: Any, value: Any, where: str) -> Any:
    """The field's new value: ``current`` itself when it was updated in place."""
    if description(current) is not None:
        load(current, value, where)
        return current
    if isinstance(current, bytearray):
        if not isinstance(value, bytes) or len(value) != len(current):
            raise ValueError(f"{where}: {_show(value)}, expected {len(current)} bytes")
        current[:] = value
        return current
    if isinstance(current, (list, tuple, deque)):
        if not isinstance(value, list):
            raise TypeError(f"{where}: {_show(value)}, expected a list")
        if current and description(current[0]) is not None:
            if len(value) != len(current):
                raise ValueError(f"{where}: {len(value)} entries, expected {len(current)}")
            for i, (item, saved) in enumerate(zip(current, value, strict=True)):
                load(item, saved, f"{where}[{i}]")
            return current
        items = [_scalar(None, item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(current, deque):
            current.clear()
            current.extend(items)
            return current
        return type(current)(items)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: {_show(value)}, expected a dict")
        return {key: _scalar(current.get(key), item, f"{where}[{key!r}]") for key, item in value.items()}
    return _scalar(current, value, where)


def _scalar(current: Any, value: Any, where: str) -> Any:
    """``value`` if it is a scalar of ``current``'s kind (None stands for any kind, either way)."""
    if not isinstance(value, _SCALARS):
        raise TypeError(f"{where}: {_show(value)}, expected a plain value")
    if current is not None and value is not None and _kind(current) != _kind(value):
        raise TypeError(f"{where}: {_show(value)}, expected {_kind(current)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return f"a {type(value).__name__}"


def check_index(where: str, value: int, limit: int) -> None:
    """For post_load: ``value`` indexes a table of ``limit`` entries (a hostile stream could say 1000)."""
    if not 0 <= value < limit:
        raise ValueError(f"{where}: {value} is outside 0..{limit - 1}")


# ---------------------------------------------------------------- finding a machine's devices
def find_devices(machine: Any, extra: Iterable[object] = ()) -> list[tuple[str, object]]:
    """(section name, device) of every device of the machine (see the module's docstring), then
    ``extra``: devices served only through closures, which no tree walk can tell apart."""
    found: list[object] = []
    _walk(machine, found, {id(machine)}, 0)
    covered = {id(part) for device in found for part in _parts(device)}
    for owner, mr in _region_owners(machine.system, machine.io):
        if id(owner) in covered:
            continue
        if description(owner) is None:
            raise MigrationBlocked(f"region {mr.name!r} is served by a {type(owner).__name__}, which declares no "
                                   "migration state (a vmstate; an empty one if it has none): it would be lost")
        found.append(owner)
        covered.update(id(part) for part in _parts(owner))
    for device in extra:
        if description(device) is None:
            raise MigrationBlocked(f"{type(device).__name__} declares no migration state (a vmstate)")
        if id(device) not in covered:
            found.append(device)
            covered.update(id(part) for part in _parts(device))
    counts: dict[str, int] = {}
    named = []
    for device in found:
        name = declared(device).name
        named.append((f"{name}/{counts.get(name, 0)}", device))
        counts[name] = counts.get(name, 0) + 1
    return named


def _walk(obj: object, found: list[object], seen: set[int], depth: int) -> None:
    """Depth first through the public attributes (but not a device's fields: its own business)."""
    vmsd = description(obj)
    skip = set(vmsd.fields) if vmsd is not None else set()
    for name, value in sorted(vars(obj).items()):
        if not name.startswith("_") and name not in skip:
            _visit(value, found, seen, depth)


def _visit(value: Any, found: list[object], seen: set[int], depth: int) -> None:
    if id(value) in seen or depth > _MAX_DEPTH:
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _visit(item, found, seen, depth + 1)
        return
    if isinstance(value, dict):
        for item in value.values():
            _visit(item, found, seen, depth + 1)
        return
    if not type(value).__module__.startswith("kvmshim.") or not hasattr(value, "__dict__"):
        return
    seen.add(id(value))
    if description(value) is not None:
        found.append(value)
    _walk(value, found, seen, depth + 1)


def _parts(device: object) -> Iterator[object]:
    """The device and every struct its fields hold (an IDE function's channels and units)."""
    yield device
    for field in declared(device).fields:
        value = getattr(device, field)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if description(item) is not None:
                yield from _parts(item)


def _region_owners(*roots: MemoryRegion) -> Iterator[tuple[object, MemoryRegion]]:
    """(owner, region) for each region under ``roots`` whose owner or ops' bound object is known."""
    for mr in dict.fromkeys(mr for root in roots for mr in root.reachable()):  # each region once
        owners = [mr.owner] if mr.owner is not None else [getattr(cb, "__self__", None) for cb in (mr.ops.read,
                                                                                                  mr.ops.write)]
        for owner in owners:
            if owner is not None:
                yield owner, mr
