"""kvmshim's reading of qemu-system-x86_64's command line: every supported option, QEMU 7.2's defaults
and errors, and one error line for anything kvmshim does not model (messages checked against QEMU 7.2)."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from kvmshim.qemu_options import (
    Boot,
    Chardev,
    Cpu,
    Drive,
    IsaDebugcon,
    IsaDebugExit,
    PciTestdev,
    PcTestdev,
    QemuConfig,
    QemuInfo,
    QemuOptionError,
    Smp,
    UnsupportedOptionError,
    parse_command_line,
)
from kvmshim.qemu_syntax import parse_number, parse_size, split_opts

MiB, GiB = 1 << 20, 1 << 30


def parse(line: str) -> QemuConfig:
    config = parse_command_line(shlex.split(line))
    assert isinstance(config, QemuConfig)
    return config


def error(line: str, kind: type = QemuOptionError) -> str:
    with pytest.raises(QemuOptionError) as err:
        parse_command_line(shlex.split(line))
    assert type(err.value) is kind and "\n" not in err.value.line
    return err.value.line


def test_kvm_unit_tests_x86_run_line():
    """What kvm-unit-tests' x86/run and runtime.bash pass, with a unittests.cfg qemu_params."""
    config = parse("--no-reboot -nodefaults -global kvm-pit.lost_tick_policy=discard -device pc-testdev "
                   "-device isa-debug-exit,iobase=0xf4,iosize=0x4 -display none -serial stdio -device pci-testdev "
                   "-machine accel=kvm -kernel x86/realmode.flat -smp 2 -append 'a -b' -cpu qemu64,+x2apic,-pcid "
                   "-m 2048 -initrd /tmp/env")
    assert config == QemuConfig(
        ram_size=2 * GiB, smp=Smp(cpus=2, cores=2, maxcpus=2), cpu=Cpu("qemu64", ("+x2apic", "-pcid")),
        kernel=Path("x86/realmode.flat"), append="a -b", initrd="/tmp/env", serial=(Chardev("stdio"),),
        devices=(PcTestdev(), IsaDebugExit(0xF4, 4), PciTestdev()), vga="none", no_reboot=True, nodefaults=True,
        pit_lost_tick_policy="discard")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ram_size = 0


def test_defaults_are_qemus():
    config = parse("")
    assert (config.machine, config.accel, config.ram_size, config.smp, config.cpu.model, config.boot) == (
        "pc-i440fx-7.2", "kvm", 128 * MiB, Smp(), "qemu64", Boot("cad", False))
    assert (config.serial, config.vga, config.display, config.devices, config.drives) == (
        (Chardev("vc"),), "std", "none", (), ())
    assert parse("-nographic").serial == (Chardev("stdio", mux_monitor=True),)
    assert parse("-nodefaults -nographic").serial == ()
    assert parse("-nodefaults -vga std").vga == "std" and parse("-vga none").vga == "none"


@pytest.mark.parametrize("line", ["-M pc", "-machine pc,accel=kvm", "-M pc-i440fx-7.2", "-machine type=pc",
                                  "-M pc -M accel=kvm:tcg", "-accel kvm", "-enable-kvm", "-accel kvm -accel tcg"])
def test_machine_and_accel(line):
    assert (parse(line).machine, parse(line).accel) == ("pc-i440fx-7.2", "kvm")


def test_enable_kvm_is_machine_accel_and_pit_off():
    assert parse("-machine accel=kvm -enable-kvm -machine pit=off").pit is False  # as kvm-unit-tests passes
    assert parse("-M pc").pit is True
    assert error("-enable-kvm -accel kvm").endswith('The -accel and "-machine accel=" options are incompatible')


def test_machine_and_accel_errors():
    assert error("-M q35", UnsupportedOptionError) == \
        "kvmshim qemu: -M q35: unsupported machine type 'q35' (pc, pc-i440fx-7.2)"
    assert error("-M pc,hpet=off", UnsupportedOptionError).endswith("unsupported machine property 'hpet' "
                                                                    "(type, accel, pit)")
    assert error("-M pc,pit=maybe").endswith("Parameter 'pit' expects 'on' or 'off'")
    assert error("-M pc,accel").endswith("-M pc,accel: Expected '=' after parameter 'accel'")
    assert error("-accel tcg", UnsupportedOptionError).endswith("-accel tcg: unsupported accelerator 'tcg' "
                                                                "(kvmshim runs on KVM)")
    assert "unsupported accelerator 'tcg'" in error("-M accel=tcg:kvm", UnsupportedOptionError)
    assert error("-machine accel=kvm -accel kvm").endswith('The -accel and "-machine accel=" options are '
                                                           'incompatible')
    assert error("-accel kvm,kernel-irqchip=split", UnsupportedOptionError).endswith(
        "unsupported parameter 'kernel-irqchip'")


@pytest.mark.parametrize("value, size", [("128", 128 * MiB), ("128M", 128 * MiB), ("1G", GiB), ("1g", GiB),
                                         ("size=64", 64 * MiB), ("1.5G", 3 * GiB // 2), ("512k", 512 << 10),
                                         ("0", 128 * MiB), ("1.5k", 8192), ("0x10", 16 * MiB), ("4096b", 8192),
                                         ("128,size=256", 256 * MiB)])
def test_memory_size(value, size):
    assert parse(f"-m {value}").ram_size == size  # a plain number is MiB; 0 is the default; aligned to 8 KiB


def test_memory_errors_and_warnings():
    hint = "Parameter 'size' expects a non-negative number below 2^64"
    for value in ("foo", "1.5", "-1", "size=", "1e3M", "12Q"):
        assert error(f"-m {value}").startswith(f"kvmshim qemu: -m {value}: {hint}")
    assert error("-m 128,maxmem=4G", UnsupportedOptionError).endswith("unsupported parameter 'maxmem'")
    assert error("-m 16E").endswith("Value '16E' is out of range for parameter 'size'")
    assert error("-m 17592186044416").endswith("too large 'size' option value")
    assert parse("-m 0x10M").warnings == ("-m 0x10M: warning: Using a multiplier suffix on hex numbers is "
                                          "deprecated: 0x10M",)


@pytest.mark.parametrize("value, smp", [
    ("2", Smp(2, 1, 1, 2, 1, 2)), ("cpus=4,sockets=2", Smp(4, 2, 1, 2, 1, 4)), ("sockets=2", Smp(2, 2, 1, 1, 1, 2)),
    ("maxcpus=4", Smp(4, 1, 1, 4, 1, 4)), ("2,maxcpus=4,cores=2", Smp(2, 2, 1, 2, 1, 4)),
    ("4,cores=2", Smp(4, 2, 1, 2, 1, 4)), ("8,sockets=2,threads=2", Smp(8, 2, 1, 2, 2, 8)),
    ("4,dies=2", Smp(4, 1, 2, 2, 1, 4)), ("2,cpus=3", Smp(3, 1, 1, 3, 1, 3)), ("0x2", Smp(2, 1, 1, 2, 1, 2))])
def test_smp_topology(value, smp):
    assert parse(f"-smp {value}").smp == smp


def test_smp_errors():
    assert error("-smp 3,sockets=2").endswith("Invalid CPU topology: product of the hierarchy must match maxcpus: "
                                              "sockets (2) * dies (1) * cores (1) * threads (1) != maxcpus (3)")
    assert error("-smp 4,maxcpus=2").endswith("maxcpus must be equal to or greater than smp: sockets (1) * dies (1) "
                                              "* cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)")
    assert error("-smp 300").endswith("Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-i440fx-7.2' "
                                      "is 255")
    assert error("-smp 2,clusters=2").endswith("clusters not supported by this machine's CPU topology")
    assert error("-smp foo").endswith("-smp foo: Parameter 'smp.cpus' expects integer")
    assert error("-smp 2,books=2", UnsupportedOptionError).endswith("unsupported parameter 'books'")
    assert "Deprecated CPU topology" in parse("-smp 0").warnings[0] and parse("-smp 0").smp == Smp()


def test_cpu_kernel_bios_name():
    config = parse("-cpu max,host-phys-bits,+vmx -bios /x/bios.bin -kernel k -append 'console=ttyS0 x=1' "
                   "-initrd i -name guest=demo")
    assert config.cpu == Cpu("max", ("host-phys-bits", "+vmx"))
    assert (config.bios, config.kernel, config.append, config.initrd, config.name) == (
        Path("/x/bios.bin"), Path("k"), "console=ttyS0 x=1", "i", "demo")
    assert parse("-name plain").name == "plain"
    assert error("-append x") == "kvmshim qemu: -append only allowed with -kernel option"
    assert error("-initrd x") == "kvmshim qemu: -initrd only allowed with -kernel option"
    assert error("-cpu ,+x2apic").endswith("unable to find CPU model ''")
    assert error("-name foo,process=bar", UnsupportedOptionError).endswith("unsupported parameter 'process'")


def test_drives():
    config = parse("-drive file=a,,b.img,format=raw,if=ide,index=1,media=disk,id=d1 -drive file=c.img "
                   "-hdc h.img -hdd x,y.img")
    assert config.drives == (Drive(Path("a,b.img"), 1, "raw", "d1"), Drive(Path("c.img"), 0),
                             Drive(Path("h.img"), 2), Drive(Path("x,y.img"), 3))
    assert [(d.bus, d.unit) for d in config.drives] == [(0, 1), (0, 0), (1, 0), (1, 1)]
    assert parse("disk.img -hdb b").drives == (Drive(Path("disk.img"), 0), Drive(Path("b"), 1))
    assert parse("-drive file=a,bus=1 -drive file=b,bus=1").drives == (Drive(Path("a"), 2), Drive(Path("b"), 3))
    assert parse("-drive file=a,bus=1,unit=1").drives == (Drive(Path("a"), 3),)


def test_drive_errors():
    assert error("-drive file=x -hda y") == "kvmshim qemu: -hda y: drive with bus=0, unit=0 (index=0) exists"
    assert error("-drive file=a,index=4").endswith("machine type does not support if=ide,bus=2,unit=0")
    assert error("-drive file=a,unit=2").endswith("unit 2 too big (max is 1)")
    assert error("-drive file=a,index=1,bus=0,unit=1").endswith("index cannot be used with bus and unit")
    assert error("-drive format=raw").endswith('A block device must be specified for "file"')
    assert error("-drive file=a,media=floppy").endswith("'floppy' invalid media")
    assert error("-drive file=a,if=scsiy").endswith("unsupported bus type 'scsiy'")
    assert error("-drive file=a,readonly=maybe").endswith("Parameter 'readonly' expects 'on' or 'off'")
    assert parse("-drive file=a,readonly=on").drives[0].readonly  # kvmshim's extension: QEMU 7.2 refuses it
    for line, what in [("-drive file=a,if=floppy", "bus type 'floppy'"), ("-drive file=a,media=cdrom", "'cdrom'"),
                       ("-drive file=a,format=qcow2", "format 'qcow2'"), ("-drive file=a,cache=none", "'cache'")]:
        assert what in error(line, UnsupportedOptionError)


def test_short_form_booleans_are_deprecated_but_read():
    assert parse("-drive file=a,readonly").drives[0].readonly
    config = parse("-drive file=a,noreadonly")
    assert config.warnings == ("-drive file=a,noreadonly: warning: short-form boolean option 'noreadonly' "
                               "deprecated (use readonly=off)",)
    assert error("-boot c,menu").endswith("-boot c,menu: Expected '=' after parameter 'menu'")  # keyval


def test_boot():
    assert parse("-boot c").boot == Boot("c")
    assert parse("-boot order=dc,menu=on").boot == Boot("dc", True)
    assert parse("-boot menu=yes -boot a").boot == Boot("a", True)
    assert error("-boot x").endswith("-boot x: Invalid boot device 'x'")
    assert error("-boot cc").endswith("Boot device 'c' was given twice")
    assert error("-boot order=e").endswith("Invalid boot device for PC: 'e'")
    assert parse("-boot b").boot == Boot("b") and parse("-boot ba").boot == Boot("ba")  # floppy B, as QEMU
    assert error("-boot cdna") == "kvmshim qemu: -boot cdna: Too many boot devices for PC"
    assert error("-boot cdne").endswith("Too many boot devices for PC")  # QEMU counts before the letters
    assert error("-boot cdnz").endswith("Invalid boot device 'z'")
    assert error("-boot menu=maybe").endswith("Parameter 'boot.menu' expects 'on' or 'off'")
    assert error("-boot c,once=d", UnsupportedOptionError).endswith("unsupported parameter 'once'")


def test_fw_cfg_files(tmp_path):
    (tmp_path / "blob").write_bytes(b"\x01\x02")
    config = parse(f"-fw_cfg name=opt/a,string=hi -fw_cfg opt/b,file={tmp_path / 'blob'}")
    assert [(f.name, f.data) for f in config.fw_cfg] == [("opt/a", b"hi"), ("opt/b", b"\x01\x02")]
    assert config.warnings == ()
    assert parse("-fw_cfg name=opt/" + "x" * 51 + ",string=y").fw_cfg[0].name == "opt/" + "x" * 51  # 55 chars


def test_fw_cfg_errors_and_warning_as_qemu():
    """QEMU 7.2's parse_fw_cfg: its wording, and a warning for every name outside opt/ (etc/ too)."""
    for line in ("-fw_cfg name=opt/x", "-fw_cfg name=opt/x,string=", "-fw_cfg string=x", "-fw_cfg name=,string=x",
                 "-fw_cfg name=opt/x,string=a,file=b"):
        assert error(line) == f"kvmshim qemu: {line}: name, plus exactly one of file, string and gen_id, are needed"
    long = "-fw_cfg name=opt/" + "x" * 52 + ",string=y"
    assert error(long) == f"kvmshim qemu: {long}: name too long (max. 55 char)"
    assert error("-fw_cfg name=opt/x,file=/nonexistent").endswith("can't load /nonexistent: No such file or directory")
    for name in ("etc/sercon-port", "foo"):
        assert parse(f"-fw_cfg name={name},string=x").warnings == (
            f"-fw_cfg name={name},string=x: warning: externally provided fw_cfg item names should be prefixed "
            'with "opt/"',)


def test_serial_and_character_devices():
    config = parse("-serial none -serial file:/tmp/s,1.log -serial null -serial mon:stdio")
    assert config.serial == (Chardev("file", Path("/tmp/s,1.log")), Chardev("null"),
                             Chardev("stdio", mux_monitor=True))
    assert parse("-serial vc:80Cx24C").serial == (Chardev("vc"),)
    assert parse("-serial none").serial == ()
    config = parse("-nodefaults -device isa-debugcon,chardev=log,iobase=0x402 -chardev file,id=log,path=seabios.log")
    assert config.devices == (IsaDebugcon(Chardev("file", Path("seabios.log"), "log"), 0x402),)
    assert parse("-debugcon stdio").devices == (IsaDebugcon(Chardev("stdio", id="debugcon")),)  # QEMU: 0xe9
    assert parse("-device isa-debugcon,chardev=c,readback=0x0 -chardev null,id=c").devices[0].readback == 0


def test_character_device_errors():
    assert error("-serial stdio -serial stdio") == \
        "kvmshim qemu: -serial stdio: cannot use stdio by multiple character devices"
    assert error("-nographic -serial stdio").endswith("cannot use stdio by multiple character devices")  # monitor
    assert error("-nographic -debugcon stdio").endswith("cannot use stdio by multiple character devices")
    assert error("-serial pty", UnsupportedOptionError).endswith("-serial pty: unsupported character backend 'pty' "
                                                                 "(stdio, null, file:PATH, vc, mon:stdio)")
    assert error("-serial file:").endswith("chardev: file: no filename given")
    assert error("-debugcon null -debugcon null").endswith("-debugcon null: already have a debugcon device")
    assert error("-chardev stdio").endswith("-chardev stdio: chardev: no id specified")
    assert error("-chardev null,id=a -chardev null,id=a").endswith("Duplicate ID 'a' for chardev")
    assert error("-chardev file,id=a").endswith("chardev: file: no filename given")
    assert error("-chardev null,id=a,path=x", UnsupportedOptionError).endswith(
        "unsupported parameter 'path' for backend 'null'")
    assert error("-chardev socket,id=a,path=x", UnsupportedOptionError).endswith("unsupported chardev backend "
                                                                                "'socket' (stdio, file or null)")
    assert error("-device isa-debugcon").endswith("Can't create debugcon device, empty char device")
    assert error("-device isa-debugcon,chardev=nosuch").endswith(
        "Property 'isa-debugcon.chardev' can't find value 'nosuch'")
    assert error("-chardev null,id=a -device isa-debugcon,chardev=a -device isa-debugcon,chardev=a,iobase=0x402"
                 ).endswith("can't take value 'a', it's in use")


def test_devices():
    config = parse("-device isa-debug-exit -device pc-testdev,id=t -device isa-debug-exit,iobase=0x10,iosize=010")
    assert config.devices == (IsaDebugExit(), PcTestdev("t"), IsaDebugExit(0x10, 8))
    assert error("-device nosuch", UnsupportedOptionError).endswith(
        "unsupported device 'nosuch' (isa-debug-exit, isa-debugcon, pc-testdev, pci-testdev)")
    assert error("-device pc-testdev,bogus=1", UnsupportedOptionError).endswith(
        "unsupported property 'pc-testdev.bogus'")
    assert error("-device isa-debug-exit,iobase=foo").endswith(
        "-device isa-debug-exit,iobase=foo: Parameter 'isa-debug-exit.iobase' expects uint32_t")
    assert error("-device isa-debug-exit,iobase=0x100000000").endswith("expects uint32_t")
    assert error("-device isa-debug-exit,iobase=0xffff").endswith("ports 0xffff+0x2 are outside the 64 KiB I/O space")
    assert error("-device pc-testdev,id=a -device pci-testdev,id=a").endswith("Duplicate ID 'a' for device")


def test_display_and_flags():
    assert parse("-display curses").display == "curses"
    assert parse("-display curses -nographic").display == "none"
    assert parse("-vnc none -display none").display == "none"
    assert error("-display gtk", UnsupportedOptionError).endswith("unsupported display 'gtk' (none or curses)")
    assert error("-vnc :1", UnsupportedOptionError).startswith("kvmshim qemu: -vnc :1: unsupported VNC display")
    assert error("-vga cirrus", UnsupportedOptionError).endswith("unsupported vga type 'cirrus' (std or none)")
    assert error("-global kvm-pit.lost_tick_policy=slew").endswith(
        "Parameter 'lost_tick_policy' does not accept value 'slew' (kvm-pit: delay or discard)")
    assert parse("-global driver=kvm-pit,property=lost_tick_policy,value=discard").pit_lost_tick_policy == "discard"
    assert error("-global isa-fdc.driveA=x", UnsupportedOptionError).endswith("unsupported global "
                                                                             "(kvmshim has kvm-pit.lost_tick_policy)")


def test_unknown_and_incomplete_options():
    assert error("-usb", UnsupportedOptionError) == "kvmshim qemu: unsupported option '-usb'"
    assert error("-m 64 --snapshot", UnsupportedOptionError) == "kvmshim qemu: unsupported option '--snapshot'"
    assert error("-S", UnsupportedOptionError) == "kvmshim qemu: unsupported option '-S'"
    assert error("-m=128", UnsupportedOptionError) == "kvmshim qemu: unsupported option '-m=128'"
    assert error("-kernel") == "kvmshim qemu: -kernel: requires an argument"


def test_information_requests():
    help_text = parse_command_line(["-h"])
    assert isinstance(help_text, QemuInfo) and help_text.text.startswith("QEMU emulator version 7.2.0 ")
    assert "\n-drive file=F" in help_text.text and "\n-device DRIVER" in help_text.text
    assert parse_command_line(["-version"]).text.split()[3] == "7.2.0"  # kvm-unit-tests reads MAJOR.MINOR.MICRO
    devices = parse_command_line(["-device", "?"]).text
    assert '"pc-testdev"' in devices and '"pci-testdev"' in devices  # what x86/run greps for
    assert "pc-i440fx-7.2" in parse_command_line(["-M", "help"]).text


def test_value_syntax():
    assert split_opts("a,b=1,,2,c=", "x", short_booleans=False) == [("x", "a"), ("b", "1,2"), ("c", "")]
    assert split_opts("x=1,x=2", None, short_booleans=False) == [("x", "1"), ("x", "2")]
    assert split_opts("on,nooff", "f", short_booleans=True) == [("f", "on"), ("off", "off")]
    assert parse_size("s", "1.5k") == 1536 and parse_size("s", "0.5", "m") == 512 << 10
    assert parse_number("n", "0x1f") == 31 and parse_number("n", "017") == 15
    for bad in ("", "-1", "+1", "08", "1_0"):
        with pytest.raises(QemuOptionError):
            parse_number("n", bad)
