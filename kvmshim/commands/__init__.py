"""One module per `kvmshim` subcommand: ``add_parser(subparsers)`` and ``run(args) -> int``."""
import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    #: What ``add_parser`` is given: the result of ``ArgumentParser.add_subparsers()``.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'16M', '512k', '1T', '0x100000' or '1048576' -> bytes (a positive multiple of 4 KiB); the suffixes
    k, M, G and T are powers of 1024 in either case, as in QEMU's -m."""
    value = text.strip().lower()
    scale = SIZE_SUFFIXES.get(value[-1:], 1)
    number = value[:-1] if scale != 1 else value
    try:
        size = int(number, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 16M, 512k, 1G, 1T or 0x100000)") from None
    if size <= 0 or size % 4096:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a positive multiple of 4 KiB")
    return size


def positive(kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: ``kind(text)`` (``int`` takes 0x...), which must be greater than zero."""
    def convert(text: str) -> float:
        try:
            value = int(text, 0) if kind is int else kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    convert.__name__ = f"positive {kind.__name__}"
    return convert
