"""cffi struct helpers shared by the binding and the tracer: plain Python values of a struct,
and structs ending in a flexible array."""
from __future__ import annotations

from typing import Any

from ._kvm_cffi import ffi

CData = Any  # a cffi cdata object (pointer or struct)


def to_python(value: CData) -> Any:
    """A struct as a dict, an array as a list (char arrays as bytes), anything else as is."""
    if not isinstance(value, ffi.CData):
        return value
    ctype = ffi.typeof(value)
    if ctype.kind == "struct" or ctype.kind == "union":
        return {name: to_python(getattr(value, name)) for name, _ in ctype.fields}
    if ctype.kind == "array":
        if ctype.item.cname == "char":
            return ffi.buffer(value)[:]
        return [to_python(item) for item in value]
    return value


def new_flex(ctype: str, count: int) -> CData:
    """A zeroed ``ctype *`` whose trailing flexible array has *count* entries."""
    fields = dict(ffi.typeof(ctype).fields)
    flex = ffi.typeof(ctype).fields[-1][0]
    assert fields[flex].type.kind == "array" and fields[flex].type.length is None, ctype
    return ffi.new(f"{ctype} *", {flex: count})
