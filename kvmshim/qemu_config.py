"""What ``kvmshim qemu`` hands the pc machine: QEMU 7.2's command line as frozen, typed values.

Defaults are QEMU's, filled in by kvmshim.qemu_options; the machine never sees option text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

MiB = 1 << 20
MACHINE = "pc-i440fx-7.2"
MACHINES = {"pc": MACHINE, MACHINE: MACHINE}
DEFAULT_RAM = 128 * MiB
PC_MAX_CPUS = 255
IDE_BUSES, IDE_UNITS = 2, 2
#: fw_cfg's file name field, NUL included: names are at most 55 bytes.
FW_CFG_MAX_FILE_PATH = 56


@dataclass(frozen=True)
class Smp:
    """The CPU topology after QEMU 7.2's machine_parse_smp_config (cores preferred over sockets)."""

    cpus: int = 1
    sockets: int = 1
    dies: int = 1
    cores: int = 1
    threads: int = 1
    maxcpus: int = 1


@dataclass(frozen=True)
class Cpu:
    """``-cpu MODEL[,FEATURE...]``: the features as written (``+x2apic``, ``-pcid``, ``vendor=...``)."""

    model: str = "qemu64"
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drive:
    """A raw IDE disk; ``index`` is ``2 * bus + unit``. ``format`` is None when not given (QEMU probes).
    ``readonly`` is kvmshim's: QEMU 7.2 refuses a read-only IDE disk, kvmshim fails its writes (ABRT)."""

    file: Path
    index: int
    format: str | None = None
    id: str | None = None
    readonly: bool = False

    @property
    def bus(self) -> int:
        return self.index // IDE_UNITS

    @property
    def unit(self) -> int:
        return self.index % IDE_UNITS


@dataclass(frozen=True)
class Boot:
    """``-boot``: the firmware's boot order (fw_cfg ``bootorder`` letters) and boot menu."""

    order: str = "cad"
    menu: bool = False


@dataclass(frozen=True)
class Chardev:
    """A character backend: ``stdio``, ``file`` (``path``), ``null``, or ``vc`` (a console kvmshim does not
    have: output is dropped). ``mux_monitor``: QEMU's ``mon:`` prefix shares it with the monitor."""

    backend: str
    path: Path | None = None
    id: str | None = None
    mux_monitor: bool = False


@dataclass(frozen=True)
class IsaDebugExit:
    """isa-debug-exit: a guest write of V to ``iobase`` ends QEMU with status ``(V << 1) | 1``."""

    iobase: int = 0x501
    iosize: int = 0x02
    id: str | None = None
    driver: ClassVar[str] = "isa-debug-exit"


@dataclass(frozen=True)
class PcTestdev:
    """pc-testdev: kvm-unit-tests' ISA test ports and MMIO window."""

    id: str | None = None
    driver: ClassVar[str] = "pc-testdev"


@dataclass(frozen=True)
class PciTestdev:
    """pci-testdev: kvm-unit-tests' PCI test device (ioeventfd-style doorbell BARs)."""

    id: str | None = None
    driver: ClassVar[str] = "pci-testdev"


@dataclass(frozen=True)
class IsaDebugcon:
    """isa-debugcon: bytes written to ``iobase`` go to ``chardev``; reads return ``readback``.
    QEMU's default port is 0xe9 (also for ``-debugcon``); SeaBIOS logs to 0x402."""

    chardev: Chardev
    iobase: int = 0xE9
    readback: int = 0xE9
    id: str | None = None
    driver: ClassVar[str] = "isa-debugcon"


Device = IsaDebugExit | PcTestdev | PciTestdev | IsaDebugcon


@dataclass(frozen=True)
class FwCfgFile:
    """``-fw_cfg name=NAME,file=F|string=S``: a named fw_cfg file and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class QemuConfig:
    """What a kvmshim pc machine needs from the command line, defaults filled in as QEMU fills them."""

    machine: str = MACHINE
    accel: str = "kvm"
    ram_size: int = DEFAULT_RAM
    smp: Smp = Smp()
    cpu: Cpu = Cpu()
    bios: Path | None = None
    kernel: Path | None = None
    append: str | None = None
    #: QEMU's multiboot form: comma-separated modules, each "FILE [ARGS]" (a Linux kernel takes one file).
    initrd: str | None = None
    drives: tuple[Drive, ...] = ()
    boot: Boot = Boot()
    serial: tuple[Chardev, ...] = ()
    devices: tuple[Device, ...] = ()
    fw_cfg: tuple[FwCfgFile, ...] = ()
    vga: str = "std"
    display: str = "none"
    no_reboot: bool = False
    nodefaults: bool = False
    name: str | None = None
    pit: bool = True  # -machine pit=off: no in-kernel PIT
    pit_lost_tick_policy: str = "delay"
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class QemuInfo:
    """``-h``, ``-version``, ``-device help`` or ``-machine help``: print ``text`` and exit with status 0."""

    text: str
