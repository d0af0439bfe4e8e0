"""`--machine pc` for the `run` and `mtree` subcommands: options and the two handlers."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional

from .memmap import BIOS_ALIGN

Trace = Callable[[str, int, int, int, bool], None]


def bios_file(text: str) -> Path:
    """--bios: an existing file whose size is a positive multiple of 64 KiB, as pc.bios needs."""
    path = Path(text)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err.strerror}") from None
    if not size or size % BIOS_ALIGN:
        raise argparse.ArgumentTypeError(f"{text}: {size} bytes, not a positive multiple of 64 KiB")
    return path


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--machine", choices=("test", "pc"), default="test",
                   help="test: the small test machine (default); pc: i440FX + PIIX booting SeaBIOS")
    p.add_argument("--bios", type=bios_file,
                   help="firmware for --machine pc (default: Debian's SeaBIOS bios-256k.bin)")


def run(args: argparse.Namespace, trace: Optional[Trace] = None) -> int:
    """Boot until SeaBIOS reports no bootable device; its debug console goes to stdout."""
    from ..machine import stdout_writer
    from .machine import DEFAULT_RAM, PcMachine

    with PcMachine(args.ram or DEFAULT_RAM, args.bios, on_output=stdout_writer) as machine:
        machine.runner.on_exit = trace
        machine.boot(args.timeout)
    return 0


def mtree(args: argparse.Namespace) -> int:
    """The map after POST (SeaBIOS has programmed PAM)."""
    from .machine import DEFAULT_RAM, PcMachine

    with PcMachine(args.ram or DEFAULT_RAM, args.bios) as machine:
        machine.boot()
        print(machine.mtree(flatview=args.flatview, disabled=args.disabled), end="")
    return 0
