"""`--machine pc` for the `run` and `mtree` subcommands: kvmshim's own spelling of the pc machine.

The options become a QemuConfig, so `kvmshim run --machine pc --disk d.img` and `kvmshim qemu -M pc
-drive file=d.img,format=raw,if=ide -serial stdio -device isa-debug-exit` build the same machine.
COM1 is the terminal; isa-debug-exit at 0x501 ends the run with QEMU's status ``(v << 1) | 1``.
With nothing to boot, the run ends when SeaBIOS reports "No bootable device" and its log
(debug console 0x402) is shown; otherwise the log goes to ``--bios-log`` if given.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ..qemu_config import Boot, Chardev, Cpu, Drive, FwCfgFile, IsaDebugcon, IsaDebugExit, QemuConfig, Smp
from .fw_cfg import sercon_port_file
from .memmap import BIOS_ALIGN

if TYPE_CHECKING:
    from .machine import PcMachine

Trace = Callable[[str, int, int, int, bool], None]
#: The options only --machine pc takes, and their defaults.
PC_ONLY: dict[str, object] = {"bios": None, "disk": [], "boot": None, "kernel": None, "smp": 1, "cpu": "qemu64",
                              "sercon": False, "screen": False, "screenshot": None, "bios_log": None}


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


def disk(text: str) -> tuple[Path, bool]:
    """--disk FILE[,readonly]."""
    name, _, flag = text.partition(",")
    if flag not in ("", "readonly"):
        raise argparse.ArgumentTypeError(f"{text}: the only flag is ',readonly'")
    return Path(name), bool(flag)


def boot(text: str) -> str:
    """--boot: QEMU's -boot order letters, checked as kvmshim qemu checks them."""
    from ..qemu_options import QemuOptionError, boot_order

    try:
        return boot_order(text)
    except QemuOptionError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err.reason}") from None


def add_options(p: argparse.ArgumentParser) -> None:
    """The pc machine's options (``--append`` and ``--initrd`` are the run command's, shared)."""
    p.add_argument("--machine", choices=("test", "pc"), default="test",
                   help="test: the small test machine (default); pc: i440FX + PIIX booting SeaBIOS")
    pc = p.add_argument_group("--machine pc")
    pc.add_argument("--bios", type=bios_file, help="firmware (default: Debian's SeaBIOS bios-256k.bin)")
    pc.add_argument("--disk", type=disk, action="append", default=[], metavar="FILE[,readonly]",
                    help="a raw disk image on the PIIX3 IDE (repeat for the next unit, up to four)")
    pc.add_argument("--boot", type=boot, default=None, metavar="ORDER",
                    help="boot order, up to 3 of QEMU's letters a-d, n (default c with a disk)")
    pc.add_argument("--kernel", type=Path, help="boot a multiboot kernel directly (with --append, --initrd)")
    pc.add_argument("--smp", type=int, default=1, metavar="N", help="vCPUs (the others start by INIT/SIPI)")
    pc.add_argument("--cpu", default="qemu64", help="QEMU's -cpu: qemu64[,+feat,-feat]")
    pc.add_argument("--sercon", action="store_true", help="have SeaBIOS mirror its text screen on COM1")
    pc.add_argument("--screen", action="store_true", help="show the VGA text screen live instead of COM1")
    pc.add_argument("--screenshot", type=Path, metavar="PNG", help="at the end, write the text screen as a PNG")
    pc.add_argument("--bios-log", type=Path, metavar="FILE", help="SeaBIOS's debug log (- for stdout)")


def config(args: argparse.Namespace) -> QemuConfig:
    """The QemuConfig these options describe."""
    from .machine import DEFAULT_RAM

    drives = tuple(Drive(path, index, "raw", readonly=readonly) for index, (path, readonly) in enumerate(args.disk))
    bootable = bool(drives or args.kernel)
    log = args.bios_log if args.bios_log is not None else (None if bootable else Path("-"))
    log_sink = Chardev("null") if log is None else Chardev("stdio") if str(log) == "-" else Chardev("file", log)
    cpu, *features = args.cpu.split(",")
    fw_cfg = (FwCfgFile("etc/sercon-port", sercon_port_file(0x3F8)),) if args.sercon else ()
    return QemuConfig(ram_size=args.ram or DEFAULT_RAM, bios=args.bios, smp=Smp(args.smp, maxcpus=args.smp,
                      cores=args.smp), cpu=Cpu(cpu, tuple(features)), kernel=args.kernel,
                      append=getattr(args, "append", None), initrd=getattr(args, "initrd", None), drives=drives,
                      boot=Boot(args.boot or ("c" if drives else "cad")), serial=(Chardev("stdio", mux_monitor=True),),
                      devices=(IsaDebugcon(log_sink, iobase=0x402), IsaDebugExit()), fw_cfg=fw_cfg,
                      vga="std" if args.screen or args.screenshot else "none", nodefaults=True)


def pc_only_given(args: argparse.Namespace) -> list[str]:
    """The --machine pc options set in ``args`` (for the test machine's refusal)."""
    return [f"--{name.replace('_', '-')}" for name, default in PC_ONLY.items() if getattr(args, name) != default]


def run(args: argparse.Namespace, trace: Callable[..., Trace] | None = None) -> int:
    """Boot; COM1 is the terminal (Ctrl-A x quits); the status is isa-debug-exit's, else 0.
    ``trace(machine)`` makes the --trace-exits hook once the machine exists."""
    from ..chardev import open_chardevs
    from .machine import PcMachine

    cfg = config(args)
    with PcMachine(cfg, stop_at_post_end=not (cfg.drives or cfg.kernel)) as machine, ExitStack() as stack:
        for warning in machine.warnings:
            print(f"kvmshim: warning: {warning}", file=sys.stderr)
        open_chardevs(stack, machine, quit=machine.stop)
        if args.screen:
            _show_screen(stack, machine)
        if trace is not None:
            machine.runner.on_exit = trace(machine)
        try:
            machine.boot(args.timeout)
        finally:
            if args.screenshot is not None and machine.board.vga is not None:
                from ..screen import write_screenshot

                write_screenshot(machine.board.vga.screen(), args.screenshot)
    return machine.exit_status


def _show_screen(stack: ExitStack, machine: PcMachine) -> None:
    """Redraw the text screen on the terminal from its dirty pages (COM1's output is not shown)."""
    from ..screen import TerminalScreen

    assert machine.board.vga is not None  # --screen gives the machine a VGA
    machine.board.serials[0].on_output = None
    stack.enter_context(TerminalScreen(machine.board.vga, sys.stdout))


def mtree(args: argparse.Namespace) -> int:
    """The map after POST (SeaBIOS has programmed PAM)."""
    from .machine import DEFAULT_RAM, PcMachine, seabios_config

    with PcMachine(seabios_config(args.ram or DEFAULT_RAM, args.bios), stop_at_post_end=True) as machine:
        machine.boot()
        print(machine.mtree(flatview=args.flatview, disabled=args.disabled), end="")
    return 0
