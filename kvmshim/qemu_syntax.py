"""The value syntax of QEMU's command line: ``key=value,...`` lists, booleans, sizes and numbers.

QEMU has two parsers for option values and the options use one or the other:
QemuOpts (``-drive``, ``-device``, ``-chardev``, ``-m``, ``-accel``, ``-name``) takes
short-form booleans (``readonly`` for ``readonly=on``, ``noreadonly`` for off,
both deprecated); keyval (``-machine``, ``-smp``, ``-boot``, ``-display``) does not.
Both take an implied first key (``-m 128`` is ``-m size=128``), ``,,`` for a comma
in a value, and let a later key override an earlier one.
"""
from __future__ import annotations

import re

#: Where a command-line error is reported: QEMU prefixes the message with the option as typed.
PROG = "kvmshim qemu"

_TRUE, _FALSE = ("on", "yes", "true", "y"), ("off", "no", "false", "n")
_DELIMITER = re.compile(r"[=,]")
_SIZE = re.compile(r"(?:(0[xX][0-9a-fA-F]+)|(\d+)(\.\d*)?)([bBkKmMgGtTpPeE]?)")
_SUFFIX_BITS = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- "
             "and exabytes, respectively")


class QemuOptionError(ValueError):
    """A command line QEMU's syntax or kvmshim's pc machine rejects. ``str()`` is QEMU's one line:
    the option and its value as typed (when the error belongs to one), then the reason."""

    def __init__(self, reason: str, location: str | None = None) -> None:
        self.reason, self.location = reason, location
        super().__init__(f"{location}: {reason}" if location else reason)

    @property
    def line(self) -> str:
        """The line to print on stderr."""
        return f"{PROG}: {self}"


class UnsupportedOptionError(QemuOptionError):
    """Valid for QEMU, but not something kvmshim's pc machine models (an option, parameter or value)."""


def split_opts(text: str, implied: str | None, *, short_booleans: bool,
               warnings: list[str] | None = None) -> list[tuple[str, str]]:
    """``key=value`` pairs in order (a repeated key appears twice: the last one counts).

    The first element without ``=`` is the value of ``implied``. With ``short_booleans``
    (QemuOpts), a later bare ``name`` is ``name=on`` and ``noname`` is ``name=off``, each
    with QEMU's deprecation warning appended to ``warnings``; keyval rejects them.
    """
    pairs: list[tuple[str, str]] = []
    pos, first = 0, True
    while pos < len(text) or first:
        end = _name_end(text, pos)
        if end < len(text) and text[end] == "=":
            name = text[pos:end]
            value, pos = _value(text, end + 1)
        elif first and implied is not None:
            name = implied
            value, pos = _value(text, pos)
        else:
            raw, pos = text[pos:end], end + 1
            if not short_booleans:
                raise QemuOptionError(f"Expected '=' after parameter '{raw}'")
            if not raw:
                raise QemuOptionError("Invalid parameter ''")
            name, value = (raw[2:], "off") if raw.startswith("no") else (raw, "on")
            if warnings is not None:
                warnings.append(f"warning: short-form boolean option '{raw}' deprecated (use {name}={value})")
        pairs.append((name, value))
        first = False
    return pairs


def _name_end(text: str, pos: int) -> int:
    match = _DELIMITER.search(text, pos)
    return match.start() if match else len(text)


def _value(text: str, pos: int) -> tuple[str, int]:
    """A value up to the next single comma (``,,`` is a comma); returns it and the next position."""
    out: list[str] = []
    while pos < len(text):
        if text[pos] == ",":
            if text[pos + 1:pos + 2] != ",":
                return "".join(out), pos + 1
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos


def parse_bool(name: str, value: str) -> bool:
    """QEMU's qapi_bool_parse: on/yes/true/y and off/no/false/n."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise QemuOptionError(f"Parameter '{name}' expects 'on' or 'off'")


def parse_size(name: str, value: str, default_suffix: str = "b",
               warnings: list[str] | None = None) -> int:
    """QEMU's qemu_strtosz: decimal (with a fraction when a suffix scales it) or hex, then an optional
    suffix B/K/M/G/T/P/E (powers of 1024, any case); ``default_suffix`` when there is none."""
    match = _SIZE.fullmatch(value)
    if match is None or (match[3] and int(match[3][1:] or 0)
                         and not _SUFFIX_BITS[(match[4] or default_suffix).lower()]):
        raise QemuOptionError(f"Parameter '{name}' expects a non-negative number below 2^64 ({SIZE_HINT})")
    hex_digits, whole, fraction, suffix = match.groups()
    if hex_digits and suffix and warnings is not None:
        warnings.append(f"warning: Using a multiplier suffix on hex numbers is deprecated: {value}")
    bits = _SUFFIX_BITS[(suffix or default_suffix).lower()]
    if hex_digits:
        size = int(hex_digits, 16) << bits
    else:  # exact fixed point, 0.5 rounded up as QEMU does
        digits = (fraction or ".")[1:]
        scaled = (int(whole + digits) << bits) * 2 // 10 ** len(digits)
        size = (scaled + 1) // 2
    if size >= 1 << 64:
        raise QemuOptionError(f"Value '{value}' is out of range for parameter '{name}'")
    return size


def parse_number(name: str, value: str, bits: int = 64, kind: str = "a number") -> int:
    """An unsigned integer as qemu_strtou64 reads it with base 0 (``0x`` hex, leading ``0`` octal)."""
    try:
        number = int(value, 16 if value[:2].lower() == "0x" else 8 if value[:1] == "0" and len(value) > 1 else 10)
    except ValueError:
        number = -1
    if not 0 <= number < 1 << bits or value[:1] in "+-_ " or "_" in value:
        raise QemuOptionError(f"Parameter '{name}' expects {kind}")
    return number
