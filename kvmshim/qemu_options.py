"""The part of ``qemu-system-x86_64``'s command line that kvmshim's pc machine models, as QEMU 7.2 spells it.

``parse_command_line(argv)`` returns a frozen QemuConfig (or QemuInfo for ``-h``,
``-version``, ``-device help``, ``-machine help``). Every option it does not know, or
knows but kvmshim does not model, raises UnsupportedOptionError; a malformed value
raises QemuOptionError; both name the option and value as QEMU's errors do. The
option set covers what kvm-unit-tests' x86/run passes (``--no-reboot -nodefaults
-global kvm-pit.lost_tick_policy=discard -device pc-testdev -device
isa-debug-exit,iobase=0xf4,iosize=0x4 -display none -serial stdio -device pci-testdev
-machine accel=kvm -kernel T.flat -smp N -append ARGS -initrd ENV``).

Where kvmshim differs from QEMU 7.2, on purpose: without ``-accel`` it uses KVM (QEMU:
TCG), and the default display is ``none`` (QEMU: a window).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .qemu_config import (
    DEFAULT_RAM,
    FW_CFG_MAX_FILE_PATH,
    IDE_BUSES,
    IDE_UNITS,
    MACHINE,
    MACHINES,
    PC_MAX_CPUS,
    Boot,
    Chardev,
    Cpu,
    Device,
    Drive,
    FwCfgFile,
    IsaDebugcon,
    IsaDebugExit,
    MiB,
    PciTestdev,
    PcTestdev,
    QemuConfig,
    QemuInfo,
    Smp,
)
from .qemu_syntax import QemuOptionError, UnsupportedOptionError, parse_bool, parse_number, parse_size, split_opts

__all__ = ["Boot", "Chardev", "Cpu", "Device", "Drive", "IsaDebugExit", "IsaDebugcon", "PcTestdev",
           "PciTestdev", "QemuConfig", "QemuInfo", "QemuOptionError", "Smp", "UnsupportedOptionError",
           "boot_order", "parse_command_line"]

VERSION = "QEMU emulator version 7.2.0 (kvmshim 0.1.0)"
PC_BOOT_DEVICES = "abcdn"  # floppy (a or b), disk, CD-ROM, network: the letters QEMU's pc accepts
PC_MAX_BOOT_DEVICES = 3  # the CMOS has three boot nibbles
LOST_TICK_POLICIES = ("delay", "discard")  # what QEMU's kvm-pit accepts


@dataclass
class _PendingDevice:
    location: str
    driver: str
    props: dict[str, str]


class _CommandLine:
    """Options in order into mutable state (QEMU's vl.c), then ``config()`` checks what spans options."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}  # QemuConfig fields by name
        self.warnings: list[str] = []
        self.machine: dict[str, str] = {}
        self.accels: list[str] = []
        self.drives: list[tuple[str, dict[str, str]]] = []
        self.serial: list[tuple[str, Chardev]] = []
        self.chardevs: dict[str, tuple[str, Chardev]] = {}
        self.devices: list[_PendingDevice] = []
        self.debugcon: tuple[str, Chardev] | None = None
        self.smp: dict[str, int] = {}
        self.nographic = False
        self.where: dict[str, str] = {}  # option -> its last occurrence, for errors found at the end

    def handler(self, name: str) -> Callable[..., QemuInfo | None]:
        """The method for option ``name`` (``-hda`` to ``-hdd`` share one)."""
        if name in ("hda", "hdb", "hdc", "hdd"):
            return partial(self.opt_hd, index=ord(name[2]) - ord("a"))
        method: Callable[..., QemuInfo | None] = getattr(self, "opt_" + name.replace("-", "_"))
        return method

    # ---------------------------------------------------------------- options
    def opt_machine(self, loc: str, value: str) -> QemuInfo | None:
        for key, item in split_opts(value, "type", short_booleans=False):
            if key not in ("type", "accel", "pit"):
                raise UnsupportedOptionError(f"unsupported machine property '{key}' (type, accel, pit)", loc)
            if key == "pit":
                self.values["pit"] = parse_bool("pit", item)
            else:
                self.machine[key] = item
        if self.machine.get("type") in ("help", "?"):
            return QemuInfo("Supported machines are:\n"
                            f"pc                   Standard PC (i440FX + PIIX, 1996) (alias of {MACHINE})\n"
                            f"{MACHINE}        Standard PC (i440FX + PIIX, 1996) (default)")
        return None

    def opt_accel(self, loc: str, value: str) -> None:
        self.accels += [item for _, item in self._opts(loc, value, "accel", ("accel",))]

    def opt_enable_kvm(self, loc: str) -> None:
        self.machine["accel"] = "kvm"  # QEMU's vl.c: the same as -machine accel=kvm
        self.where["machine"] = loc

    def opt_m(self, loc: str, value: str) -> None:
        size = None
        for _, item in self._opts(loc, value, "size", ("size",)):
            size = parse_size("size", item, warnings=self.warnings)
            if item[-1:].isdigit():  # QEMU's legacy unit: a plain number is MiB
                size *= MiB
                if size >= 1 << 64:
                    raise QemuOptionError("too large 'size' option value")
        size = -(-(size or DEFAULT_RAM) // 8192) * 8192  # 0 means the default; then aligned up to 8 KiB
        self.values["ram_size"] = size

    def opt_smp(self, loc: str, value: str) -> None:
        names = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")
        for key, item in split_opts(value, "cpus", short_booleans=False):  # repeated -smp options merge
            if key not in names:
                raise UnsupportedOptionError(f"unsupported parameter '{key}'", loc)
            self.smp[key] = parse_number(f"smp.{key}", item, 32, "integer")
        self.values["smp"] = _topology(self.smp, self.warnings)

    def opt_cpu(self, loc: str, value: str) -> None:
        model, *features = value.split(",")
        if not model:
            raise QemuOptionError("unable to find CPU model ''")
        self.values["cpu"] = Cpu(model, tuple(features))

    def opt_bios(self, loc: str, value: str) -> None:
        self.values["bios"] = Path(value)

    def opt_kernel(self, loc: str, value: str) -> None:
        self.values["kernel"] = Path(value)

    def opt_append(self, loc: str, value: str) -> None:
        self.values["append"] = value

    def opt_initrd(self, loc: str, value: str) -> None:
        self.values["initrd"] = value

    def opt_drive(self, loc: str, value: str) -> None:
        props = dict(self._opts(loc, value, None, ("file", "format", "if", "index", "bus", "unit", "media",
                                                     "readonly", "id")))
        self.drives.append((loc, props))

    def opt_hd(self, loc: str, value: str, index: int) -> None:
        """-hda to -hdd, and a bare file name: QEMU's drive_add takes the name literally, commas and all."""
        self.drives.append((loc, {"file": value, "index": str(index), "media": "disk"}))

    def opt_boot(self, loc: str, value: str) -> None:
        boot = self.values.get("boot", Boot())
        for key, item in split_opts(value, "order", short_booleans=False):
            if key == "order":
                boot = replace(boot, order=boot_order(item))
            elif key == "menu":
                boot = replace(boot, menu=parse_bool("boot.menu", item))
            else:
                raise UnsupportedOptionError(f"unsupported parameter '{key}'", loc)
        self.values["boot"] = boot

    def opt_serial(self, loc: str, value: str) -> None:
        self.values["default_serial"] = False
        if value != "none":  # QEMU's serial_parse: "none" takes no port
            self.serial.append((loc, _legacy_chardev(value, loc)))

    def opt_debugcon(self, loc: str, value: str) -> None:
        if self.debugcon is not None:
            raise QemuOptionError("already have a debugcon device", loc)
        self.debugcon = (loc, replace(_legacy_chardev(value, loc), id="debugcon"))

    def opt_chardev(self, loc: str, value: str) -> None:
        props = dict(self._opts(loc, value, "backend", ("backend", "id", "path")))
        backend, ident = props.get("backend", ""), props.get("id")
        if not ident:
            raise QemuOptionError("chardev: no id specified", loc)
        if ident in self.chardevs:
            raise QemuOptionError(f"Duplicate ID '{ident}' for chardev", loc)
        if backend not in ("stdio", "file", "null"):
            raise UnsupportedOptionError(f"unsupported chardev backend '{backend}' (stdio, file or null)", loc)
        if backend == "file" and "path" not in props:
            raise QemuOptionError("chardev: file: no filename given", loc)
        if backend != "file" and "path" in props:
            raise UnsupportedOptionError(f"unsupported parameter 'path' for backend '{backend}'", loc)
        path = Path(props["path"]) if backend == "file" else None
        self.chardevs[ident] = (loc, Chardev(backend, path, ident))

    def opt_device(self, loc: str, value: str) -> QemuInfo | None:
        pairs = self._opts(loc, value, "driver", None)
        driver = dict(pairs).get("driver", "")
        if driver in ("help", "?"):
            return QemuInfo("\n".join(("Misc devices:",) + _DEVICE_HELP))
        if driver not in _DEVICES:
            raise UnsupportedOptionError(f"unsupported device '{driver}' ({', '.join(_DEVICES)})", loc)
        allowed = _DEVICES[driver][1]
        props = {}
        for key, item in pairs:
            if key != "driver" and key != "id" and key not in allowed:
                raise UnsupportedOptionError(f"unsupported property '{driver}.{key}'", loc)
            props[key] = item
        self.devices.append(_PendingDevice(loc, driver, props))
        return None

    def opt_global(self, loc: str, value: str) -> None:
        driver: str | None
        prop: str | None
        item: str | None
        name, eq, item = value.partition("=")
        if "." in name:
            driver, _, prop = name.partition(".")
        else:
            props = dict(self._opts(loc, value, None, ("driver", "property", "value")))
            driver, prop, item, eq = props.get("driver"), props.get("property"), props.get("value"), "="
        if (driver, prop) != ("kvm-pit", "lost_tick_policy") or not eq:
            raise UnsupportedOptionError("unsupported global (kvmshim has kvm-pit.lost_tick_policy)", loc)
        if item not in LOST_TICK_POLICIES:
            raise QemuOptionError(f"Parameter 'lost_tick_policy' does not accept value '{item}' "
                                  f"(kvm-pit: {' or '.join(LOST_TICK_POLICIES)})", loc)
        self.values["pit_lost_tick_policy"] = item

    def opt_display(self, loc: str, value: str) -> None:
        for key, item in split_opts(value, "type", short_booleans=False):
            if key != "type":
                raise UnsupportedOptionError(f"unsupported parameter '{key}'", loc)
            if item not in ("none", "curses"):
                raise UnsupportedOptionError(f"unsupported display '{item}' (none or curses)", loc)
            self.values["display"] = item

    def opt_nographic(self, loc: str) -> None:
        self.nographic = True
        self.values["display"] = "none"

    def opt_vnc(self, loc: str, value: str) -> None:
        if value != "none":
            raise UnsupportedOptionError("unsupported VNC display (kvmshim has no VNC server: -vnc none)", loc)

    def opt_vga(self, loc: str, value: str) -> None:
        if value not in ("std", "none"):
            raise UnsupportedOptionError(f"unsupported vga type '{value}' (std or none)", loc)
        self.values["vga"] = value

    def opt_nodefaults(self, loc: str) -> None:
        self.values["nodefaults"] = True

    def opt_no_reboot(self, loc: str) -> None:
        self.values["no_reboot"] = True

    def opt_fw_cfg(self, loc: str, value: str) -> None:
        """``-fw_cfg [name=]NAME,file=F|string=S``: one more fw_cfg file, checked as QEMU's parse_fw_cfg
        (QEMU reads F at start-up); a name the machine already has fails when the board is built."""
        props = {key: item for key, item in self._opts(loc, value, "name", ("name", "file", "string")) if item}
        name = props.get("name")
        if not name or ("file" in props) == ("string" in props):
            raise QemuOptionError("name, plus exactly one of file, string and gen_id, are needed", loc)
        if len(name.encode()) > FW_CFG_MAX_FILE_PATH - 1:
            raise QemuOptionError(f"name too long (max. {FW_CFG_MAX_FILE_PATH - 1} char)", loc)
        if not name.startswith("opt/"):
            self.warnings.append('warning: externally provided fw_cfg item names should be prefixed with "opt/"')
        if "string" in props:
            data = props["string"].encode()
        else:
            try:
                data = Path(props["file"]).read_bytes()
            except OSError as err:
                raise QemuOptionError(f"can't load {props['file']}: {err.strerror}", loc) from None
        self.values["fw_cfg"] = self.values.get("fw_cfg", ()) + (FwCfgFile(name, data),)

    def opt_name(self, loc: str, value: str) -> None:
        for _, item in self._opts(loc, value, "guest", ("guest",)):
            self.values["name"] = item

    def _opts(self, loc: str, value: str, implied: str | None,
              allowed: Sequence[str] | None) -> list[tuple[str, str]]:
        """QemuOpts pairs; a key outside ``allowed`` is unsupported."""
        pairs = split_opts(value, implied, short_booleans=True, warnings=self.warnings)
        for key, _ in pairs:
            if allowed is not None and key not in allowed:
                raise UnsupportedOptionError(f"unsupported parameter '{key}'", loc)
        return pairs

    # ---------------------------------------------------------------- after the last option
    def config(self) -> QemuConfig:
        values = dict(self.values)
        defaults = not values.pop("nodefaults", False)
        explicit_serial = not values.pop("default_serial", True)
        values["machine"], values["accel"] = self._machine_and_accel()
        if "kernel" not in values:
            for option in ("append", "initrd"):
                if option in values:
                    raise QemuOptionError(f"-{option} only allowed with -kernel option")
        values["drives"] = self._drives()
        serial = [chardev for _, chardev in self.serial]
        if defaults and not explicit_serial:  # qemu_create_default_devices
            serial = [Chardev("stdio", mux_monitor=True)] if self.nographic else [Chardev("vc")]
        values["serial"] = tuple(serial)
        values["devices"] = self._devices()
        # With -nographic, a default serial port shares stdio with the monitor; else the monitor takes it.
        self._check_stdio(int(defaults and self.nographic))
        if not defaults:
            values.setdefault("vga", "none")
        return QemuConfig(**values, nodefaults=not defaults, warnings=tuple(self.warnings))

    def _machine_and_accel(self) -> tuple[str, str]:
        machine = self.machine.get("type", MACHINE)
        if machine not in MACHINES:
            raise UnsupportedOptionError(f"unsupported machine type '{machine}' ({', '.join(MACHINES)})",
                                         self.where["machine"])
        if "accel" in self.machine and self.accels:
            raise QemuOptionError('The -accel and "-machine accel=" options are incompatible')
        accels = self.machine["accel"].split(":") if "accel" in self.machine else self.accels or ["kvm"]
        if accels[0] != "kvm":  # QEMU uses the first one that initialises
            where = self.where["machine" if "accel" in self.machine else "accel"]
            raise UnsupportedOptionError(f"unsupported accelerator '{accels[0]}' (kvmshim runs on KVM)", where)
        return MACHINES[machine], "kvm"

    def _drives(self) -> tuple[Drive, ...]:
        drives: dict[int, Drive] = {}
        for loc, props in self.drives:
            drive = _located(loc, _drive, props, drives)
            drives[drive.index] = drive
        return tuple(drives.values())

    def _devices(self) -> tuple[Device, ...]:
        devices: list[Device] = []
        ids: set[str | None] = set()
        used: set[str] = set()
        for pending in self.devices:
            ident = pending.props.get("id")
            if ident is not None and ident in ids:
                raise QemuOptionError(f"Duplicate ID '{ident}' for device", pending.location)
            ids.add(ident)
            devices.append(_located(pending.location, self._device, pending, used))
        if self.debugcon is not None:
            devices.append(IsaDebugcon(self.debugcon[1]))
        return tuple(devices)

    def _device(self, pending: _PendingDevice, used: set[str]) -> Device:
        cls, converters = _DEVICES[pending.driver]
        kwargs: dict[str, Any] = {"id": pending.props.get("id")}
        for key, item in pending.props.items():
            convert = converters.get(key)
            if convert is not None:
                kwargs[key] = convert(f"{pending.driver}.{key}", item)
        if "chardev" in converters:
            name = pending.props.get("chardev")
            if not name:
                raise QemuOptionError("Can't create debugcon device, empty char device")
            if name not in self.chardevs:
                raise QemuOptionError(f"Property '{pending.driver}.chardev' can't find value '{name}'")
            if name in used:
                raise QemuOptionError(f"Property '{pending.driver}.chardev' can't take value '{name}', it's in use")
            used.add(name)
            kwargs["chardev"] = self.chardevs[name][1]
        if hasattr(cls, "iobase"):
            base = kwargs.get("iobase", cls.iobase)
            size = kwargs.get("iosize", getattr(cls, "iosize", 1))
            if base + size > 0x10000:
                raise QemuOptionError(f"ports {base:#x}+{size:#x} are outside the 64 KiB I/O space")
        device: Device = cls(**kwargs)
        return device

    def _check_stdio(self, default_users: int) -> None:
        """QEMU opens stdio for one character device only (a ``mon:`` mux counts once)."""
        users = self.serial + list(self.chardevs.values()) + ([self.debugcon] if self.debugcon else [])
        stdio = [loc for loc, chardev in users if chardev.backend == "stdio"]
        if len(stdio) + default_users > 1:
            raise QemuOptionError("cannot use stdio by multiple character devices", stdio[-1])


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _located(loc: str | None, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``func``; a QemuOptionError without a location gets ``loc``."""
    try:
        return func(*args, **kwargs)
    except QemuOptionError as err:
        if err.location is not None:
            raise
        raise type(err)(err.reason, loc) from None


def _topology(given: dict[str, int], warnings: list[str]) -> Smp:
    """QEMU 7.2's machine_parse_smp_config for pc: 0 means omitted (deprecated), then cores before sockets."""
    if 0 in given.values():
        warnings.append("warning: Deprecated CPU topology (considered invalid): "
                        "CPU topology parameters must be greater than zero")
    if given.get("clusters", 1) > 1:
        raise QemuOptionError("clusters not supported by this machine's CPU topology")
    cpus, sockets, cores, threads, maxcpus = (given.get(k, 0) for k in ("cpus", "sockets", "cores", "threads",
                                                                       "maxcpus"))
    dies = given.get("dies") or 1
    if not cpus and not maxcpus:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
    else:
        maxcpus = maxcpus or cpus
        if not cores:
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * dies * threads)
        elif not sockets:
            threads = threads or 1
            sockets = maxcpus // (dies * cores * threads)
        threads = threads or maxcpus // (sockets * dies * cores)
    maxcpus = maxcpus or sockets * dies * cores * threads
    cpus = cpus or maxcpus
    smp = Smp(cpus, sockets, dies, cores, threads, maxcpus)
    hierarchy = f"sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})"
    if sockets * dies * cores * threads != maxcpus:
        raise QemuOptionError("Invalid CPU topology: product of the hierarchy must match maxcpus: "
                              f"{hierarchy} != maxcpus ({maxcpus})")
    if maxcpus < cpus:
        raise QemuOptionError("Invalid CPU topology: maxcpus must be equal to or greater than smp: "
                              f"{hierarchy} == maxcpus ({maxcpus}) < smp_cpus ({cpus})")
    if maxcpus > PC_MAX_CPUS:
        raise QemuOptionError(f"Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine '{MACHINE}' "
                              f"is {PC_MAX_CPUS}")
    return smp


def boot_order(order: str) -> str:
    """validate_bootdevices, then pc's set_boot_dev: letters a-p, each once; then at most three, and
    only a, b, c, d, n on a pc. Also ``kvmshim run --boot``'s check."""
    for i, letter in enumerate(order):
        if not "a" <= letter <= "p":
            raise QemuOptionError(f"Invalid boot device '{letter}'")
        if letter in order[:i]:
            raise QemuOptionError(f"Boot device '{letter}' was given twice")
    if len(order) > PC_MAX_BOOT_DEVICES:
        raise QemuOptionError("Too many boot devices for PC")
    for letter in order:
        if letter not in PC_BOOT_DEVICES:
            raise QemuOptionError(f"Invalid boot device for PC: '{letter}'")
    return order


def _legacy_chardev(spec: str, loc: str) -> Chardev:
    """``-serial``/``-debugcon`` backends: stdio, null, file:PATH, vc[:WxH], each optionally after ``mon:``."""
    mux = spec.startswith("mon:")
    body = spec[4:] if mux else spec
    if body in ("stdio", "null"):
        return Chardev(body, mux_monitor=mux)
    if body == "vc" or body.startswith("vc:"):
        return Chardev("vc", mux_monitor=mux)
    if body.startswith("file:"):
        if not body[5:]:
            raise QemuOptionError("chardev: file: no filename given", loc)
        return Chardev("file", Path(body[5:]), mux_monitor=mux)
    raise UnsupportedOptionError(f"unsupported character backend '{spec}' (stdio, null, file:PATH, "
                                 "vc, mon:stdio)", loc)


def _drive(props: dict[str, str], drives: dict[int, Drive]) -> Drive:
    """drive_new for ``if=ide``: the index from index= or bus=/unit= or the first free unit."""
    interface = props.get("if", "ide")
    if interface != "ide":
        known = interface in ("floppy", "scsi", "sd", "mtd", "pflash", "virtio", "none", "xen")
        raise (UnsupportedOptionError if known else QemuOptionError)(f"unsupported bus type '{interface}'")
    media = props.get("media", "disk")
    if media == "cdrom":
        raise UnsupportedOptionError("unsupported media 'cdrom' (kvmshim's IDE has disks only)")
    if media != "disk":
        raise QemuOptionError(f"'{media}' invalid media")
    if props.get("format", "raw") != "raw":
        raise UnsupportedOptionError(f"unsupported format '{props['format']}' (kvmshim reads raw images)")
    readonly = parse_bool("readonly", props.get("readonly", "off"))  # QEMU 7.2 refuses it for a disk
    if not props.get("file"):
        raise QemuOptionError('A block device must be specified for "file"')
    bus = parse_number("bus", props["bus"], 32) if "bus" in props else None
    unit = parse_number("unit", props["unit"], 32) if "unit" in props else None
    if "index" in props:
        if bus is not None or unit is not None:
            raise QemuOptionError("index cannot be used with bus and unit")
        index = parse_number("index", props["index"], 32)
    else:
        if unit is not None and unit >= IDE_UNITS:
            raise QemuOptionError(f"unit {unit} too big (max is {IDE_UNITS - 1})")
        index = (bus or 0) * IDE_UNITS + (unit or 0)
        while unit is None and index in drives:
            index += 1
    bus, unit = divmod(index, IDE_UNITS)
    if index in drives:
        raise QemuOptionError(f"drive with bus={bus}, unit={unit} (index={index}) exists")
    if bus >= IDE_BUSES:
        raise QemuOptionError(f"machine type does not support if=ide,bus={bus},unit={unit}")
    return Drive(Path(props["file"]), index, props.get("format"), props.get("id"), readonly)


def _uint32(name: str, value: str) -> int:
    return parse_number(name, value, 32, "uint32_t")


#: driver -> (class, property -> converter); the chardev property names a -chardev id.
_DEVICES: dict[str, tuple[type, dict[str, Callable[[str, str], int] | None]]] = {
    "isa-debug-exit": (IsaDebugExit, {"iobase": _uint32, "iosize": _uint32}),
    "isa-debugcon": (IsaDebugcon, {"iobase": _uint32, "readback": _uint32, "chardev": None}),
    "pc-testdev": (PcTestdev, {}),
    "pci-testdev": (PciTestdev, {}),
}
#: QEMU 7.2's `-device help` lines for them (kvm-unit-tests' x86/run greps for the testdevs).
_DEVICE_HELP = ('name "isa-debug-exit", bus ISA', 'name "isa-debugcon", bus ISA', 'name "pc-testdev", bus ISA',
                'name "pci-testdev", bus PCI, desc "PCI Test Device"')


# option -> (metavar or None for a flag, help); the handler is _CommandLine.opt_<name with _ for ->.
OPTIONS: dict[str, tuple[str | None, str]] = {
    "machine": ("[type=]pc[,accel=kvm][,pit=on|off]", "the machine: pc (alias of pc-i440fx-7.2); also -M"),
    "accel": ("kvm", "the accelerator (kvm only)"),
    "enable-kvm": (None, "same as -accel kvm"),
    "m": ("[size=]SIZE", "RAM size; a plain number is MiB (default 128M)"),
    "smp": ("[cpus=]N[,sockets=,dies=,cores=,threads=,maxcpus=]", "vCPUs and their topology"),
    "cpu": ("MODEL[,+FEATURE,-FEATURE,FEATURE[=on|off],vendor=,model-id=,phys-bits=,host-phys-bits]",
            "CPU model: qemu64 (default), host or max"),
    "bios": ("FILE", "firmware image (default: SeaBIOS bios-256k.bin)"),
    "kernel": ("FILE", "a kernel (multiboot) to load instead of booting from a disk"),
    "append": ("ARGS", "the kernel command line"),
    "initrd": ("FILE", "a module for the kernel"),
    "drive": ("file=F[,format=raw][,if=ide][,index=N|bus=B,unit=U][,media=disk][,id=ID]", "a raw IDE disk"),
    "hda": ("FILE", "IDE disk 0 (also: a bare file name)"),
    "hdb": ("FILE", "IDE disk 1"),
    "hdc": ("FILE", "IDE disk 2"),
    "hdd": ("FILE", "IDE disk 3"),
    "boot": ("[order=]LETTERS[,menu=on|off]", "boot order, up to 3 of a/b floppy, c disk, d CD-ROM, n network"),
    "serial": ("stdio|null|none|file:F|vc|mon:stdio", "the next serial port's backend"),
    "debugcon": ("stdio|null|file:F", "an isa-debugcon at 0xe9 on that backend"),
    "chardev": ("stdio|null|file,id=ID[,path=F]", "a character backend for -device ...,chardev=ID"),
    "device": ("DRIVER[,PROP=VALUE...]", "isa-debug-exit[,iobase=,iosize=], isa-debugcon,chardev=ID[,iobase=]"
                                         "[,readback=], pc-testdev, pci-testdev; help lists them"),
    "global": ("kvm-pit.lost_tick_policy=delay|discard", "the in-kernel PIT's lost tick policy"),
    "fw_cfg": ("[name=]NAME,file=F|string=S", "one more fw_cfg file (e.g. etc/sercon-port from a file)"),
    "display": ("none|curses", "no display, or the text screen in this terminal"),
    "nographic": (None, "no display; the serial port (and monitor) on stdio"),
    "vnc": ("none", "no VNC server"),
    "vga": ("std|none", "the VGA text screen, or none"),
    "nodefaults": (None, "no default devices (serial port, VGA)"),
    "no-reboot": (None, "exit instead of rebooting"),
    "name": ("[guest=]NAME", "the guest's name"),
    "h": (None, "this help"),
    "help": (None, "this help"),
    "version": (None, "the version"),
}
ALIASES = {"M": "machine"}


def _usage() -> str:
    lines = [VERSION, "usage: kvmshim qemu [options] [disk_image]", "",
             "The options of qemu-system-x86_64 that kvmshim's pc machine models:"]
    for name, (metavar, text) in OPTIONS.items():
        head = f"-{name} {metavar}" if metavar else f"-{name}"
        lines.append(f"{head:<30} {text}" if len(head) < 30 else f"{head}\n{'':<30} {text}")
    return "\n".join(lines)


def parse_command_line(argv: Sequence[str]) -> QemuConfig | QemuInfo:
    """Parse qemu-system-x86_64 arguments (without the program name) as QEMU 7.2 does."""
    line = _CommandLine()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):  # QEMU: a bare argument is the first IDE disk
            line.opt_hd(arg, arg, 0)
            continue
        name = arg[2:] if arg.startswith("--") else arg[1:]
        name = ALIASES.get(name, name)
        if name not in OPTIONS:
            raise UnsupportedOptionError(f"unsupported option '{arg}'")
        if name in ("h", "help", "version"):
            return QemuInfo(VERSION if name == "version" else _usage())
        if OPTIONS[name][0] is None:
            line.where[name] = arg
            line.handler(name)(arg)
            continue
        if not args:
            raise QemuOptionError("requires an argument", arg)
        value = args.pop(0)
        loc = line.where[name] = f"{arg} {value}"
        seen = len(line.warnings)
        info = _located(loc, line.handler(name), loc, value)
        line.warnings[seen:] = [f"{loc}: {warning}" for warning in line.warnings[seen:]]
        if info is not None:
            return info
    return line.config()
