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

``find_devices`` lists a machine's devices by walking its attributes (and those of kvmshim
objects it holds, such as the pc machine's board), in sorted order, so two machines built the
same way list the same devices in the same order; each gets the section name ``NAME/INSTANCE``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Optional

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


def description(obj: object) -> Optional[VMStateDescription]:
    found = getattr(type(obj), "vmstate", None)
    return found if isinstance(found, VMStateDescription) else None


def save(device: object) -> dict[str, Any]:
    """The device's fields as plain values (None, bool, int, str, bytes, lists, dicts)."""
    vmsd = description(device)
    assert vmsd is not None, f"{type(device).__name__} has no vmstate"
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
    vmsd = description(device)
    assert vmsd is not None, f"{type(device).__name__} has no vmstate"
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
            for i, (item, saved) in enumerate(zip(current, value)):
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
def find_devices(machine: object, extra: Iterable[object] = ()) -> list[tuple[str, object]]:
    """(section name, device) of every device the machine reaches through public attributes, then
    ``extra`` (devices the caller mapped itself). MigrationBlocked for a kvmshim object that serves
    a region of its own but declares no vmstate: its state would be lost."""
    found: list[object] = []
    seen: set[int] = {id(machine)}
    _walk(machine, found, seen, 0)
    for device in extra:
        if description(device) is None:
            raise MigrationBlocked(f"{type(device).__name__} declares no migration state (a vmstate)")
        if id(device) not in seen:
            seen.add(id(device))
            found.append(device)
    counts: dict[str, int] = {}
    named = []
    for device in found:
        name = description(device).name  # type: ignore[union-attr]
        named.append((f"{name}/{counts.get(name, 0)}", device))
        counts[name] = counts.get(name, 0) + 1
    return named


def _walk(obj: object, found: list[object], seen: set[int], depth: int) -> None:
    vmsd = description(obj)
    skip = set(vmsd.fields) if vmsd is not None else set()
    for name, value in sorted(vars(obj).items()):
        if not name.startswith("_") and name not in skip:
            _visit(value, f"{type(obj).__name__}.{name}", found, seen, depth)


def _visit(value: Any, path: str, found: list[object], seen: set[int], depth: int) -> None:
    if id(value) in seen or depth > _MAX_DEPTH:
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _visit(item, path, found, seen, depth + 1)
        return
    if isinstance(value, dict):
        for item in value.values():
            _visit(item, path, found, seen, depth + 1)
        return
    if not type(value).__module__.startswith("kvmshim.") or not hasattr(value, "__dict__"):
        return
    seen.add(id(value))
    if description(value) is not None:
        found.append(value)
    else:
        _check_stateless(value, path)
    _walk(value, found, seen, depth + 1)


def _check_stateless(obj: object, path: str) -> None:
    for value in vars(obj).values():
        if isinstance(value, MemoryRegion) and _serves(value, obj):
            raise MigrationBlocked(f"{path} ({type(obj).__name__}) serves region {value.name!r} but declares no "
                                   "migration state (a vmstate): its state would be lost")


def _serves(mr: MemoryRegion, obj: object) -> bool:
    return any(getattr(callback, "__self__", None) is obj for callback in (mr.ops.read, mr.ops.write))

