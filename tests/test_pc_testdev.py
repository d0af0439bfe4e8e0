"""QEMU's test devices as kvm-unit-tests drives them: isa-debug-exit, pc-testdev, pci-testdev,
and port 0x92; through AddressSpaces, and on real KVM (string I/O, ioeventfds that absorb writes)."""
from __future__ import annotations

import subprocess

import pytest

import memapi
from kvmshim.pc.pci import PciError, PciHost
from kvmshim.pc.port92 import Port92
from kvmshim.pc.testdev import IsaDebugExit, PciTestdev, PcTestdev
from memapi import AddressSpace, MemoryRegion

MiB = 1 << 20


class Bus:
    """System memory with 1 MiB of RAM, an I/O space, and a PCI host whose memory BARs map into system."""

    def __init__(self) -> None:
        self.system = MemoryRegion.container("system", memapi.UINT64_MAX)
        self.ram = MemoryRegion.ram("ram", MiB)
        self.system.add_subregion(0, self.ram)
        self.io = MemoryRegion.io("io", 0x10000, memapi.UNASSIGNED_IO_OPS)
        self.memory = AddressSpace(self.system, "memory")
        self.io_space = AddressSpace(self.io, "I/O")
        self.host = PciHost([], memory=self.system)
        self.host.map(self.io)

    def config_write(self, devfn: int, offset: int, value: int, size: int = 4) -> None:
        self.io_space.write_int(0xCF8, 1 << 31 | devfn << 8 | offset & 0xFC, 4)
        self.io_space.write_int(0xCFC + (offset & 3), value, size)

    def config_read(self, devfn: int, offset: int, size: int = 4) -> int:
        self.io_space.write_int(0xCF8, 1 << 31 | devfn << 8 | offset & 0xFC, 4)
        return self.io_space.read_int(0xCFC + (offset & 3), size)

    def close(self) -> None:
        self.memory.destroy()
        self.io_space.destroy()
        self.ram.ram_block.close()


@pytest.fixture
def bus():
    machine = Bus()
    yield machine
    machine.close()


# ------------------------------------------------------------------ isa-debug-exit, port 0x92
@pytest.mark.parametrize("value, size", [(0, 1), (0x21, 1), (0x1234, 2), (0x7FFFFFFF, 4)])
def test_debug_exit_status(bus, value, size):
    statuses = []
    device = IsaDebugExit(statuses.append, iobase=0xF4, iosize=4)
    device.map(bus.io)
    bus.io_space.write_int(0xF4, value, size)
    assert statuses == [value << 1 | 1] == [device.status]
    assert bus.io_space.read_int(0xF4, 4) == 0


def test_debug_exit_default_ports_and_bad_parameters(bus):
    device = IsaDebugExit(lambda status: None)
    device.map(bus.io)
    assert {r.mr.name for r in bus.io_space.current_map if 0x501 <= r.start < 0x503} == {"isa-debug-exit"}
    for iobase, iosize in ((0x10000, 1), (0xFFFF, 2), (0x500, 0)):
        with pytest.raises(ValueError, match="isa-debug-exit"):
            IsaDebugExit(lambda status: None, iobase=iobase, iosize=iosize)


def test_port92_a20_and_fast_reset(bus):
    resets, a20 = [], []
    port = Port92(lambda: resets.append(1), a20.append)
    port.map(bus.io)
    bus.io_space.write_int(0x92, 0x02, 1)
    assert bus.io_space.read_int(0x92, 1) == 0x02 and port.a20 == 1 and a20 == [1] and resets == []
    bus.io_space.write_int(0x92, 0x03, 1)
    bus.io_space.write_int(0x92, 0x03, 1)  # only a rising bit 0 resets
    assert resets == [1]
    port.reset()
    assert bus.io_space.read_int(0x92, 1) == 0x02


# ------------------------------------------------------------------ pc-testdev
@pytest.fixture
def testdev(bus):
    lines = []
    device = PcTestdev(lambda line, level: lines.append((line, level)), bus.memory)
    device.map(bus.system, bus.io)
    device.lines = lines
    return device


def test_scratch_port_byte_lanes(bus, testdev):
    io = bus.io_space
    io.write_int(0xE0, 0x11223344, 4)
    assert [io.read_int(0xE0 + i, 1) for i in range(4)] == [0x44, 0x33, 0x22, 0x11]
    io.write_int(0xE2, 0xBEEF, 2)
    assert io.read_int(0xE0, 4) == 0xBEEF3344 and io.read_int(0xE2, 2) == 0xBEEF
    io.write_int(0xE9, 0x55, 1)  # the byte-split alias of the same latch
    assert io.read_int(0xE8, 4) == 0xBEEF5544 == io.read_int(0xE0, 4)
    io.write_int(0xE8, 0x01020304, 4)
    assert io.read_int(0xE0, 4) == 0x01020304


def test_irq_lines(bus, testdev):
    bus.io_space.write_int(0x2000 + 10, 1, 1)
    bus.io_space.write_int(0x2000 + 10, 0, 1)
    bus.io_space.write_int(0x2000 + 23, 0x80, 1)
    assert testdev.lines == [(10, 1), (10, 0), (23, 1)]
    assert bus.io_space.read_int(0x2000, 1) == 0


def test_flush_page_keeps_ram_contents(bus, testdev):
    bus.memory.write(0x5000, b"flush me" * 8)
    bus.io_space.write_int(0xE4, 0x5123, 4)
    bus.io_space.write_int(0xE4, 0xFFFF0000, 4)  # not RAM: nothing to do
    bus.io_space.write_int(0xE4, 0x6000, 1)  # the port takes dwords only
    assert testdev.flushed == [0x5000, 0xFFFF0000]
    assert bus.memory.read(0x5000, 64)[0] == b"flush me" * 8
    assert bus.io_space.read_int(0xE4, 4) == 0


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_iomem_page(bus, testdev, size):
    value = 0x0102030405060708 & (1 << 8 * size) - 1
    bus.memory.write_int(0xFF000100, value, size)
    assert bus.memory.read_int(0xFF000100, size) == value
    assert testdev.iomem[0x100:0x100 + size] == value.to_bytes(size, "little")
    assert bus.memory.read_int(0xFF00FFFC, 4) == 0


# ------------------------------------------------------------------ pci-testdev
@pytest.fixture
def pcidev(bus):
    device = PciTestdev()
    bus.host.add(device)
    yield device
    device.close()


def _place_bars(bus, device, mmio=0xC0000, pio=0xC100):
    bus.config_write(device.devfn, 0x10, mmio)
    bus.config_write(device.devfn, 0x14, pio)
    bus.config_write(device.devfn, 0x04, 0x0003, 2)


def test_pci_testdev_identity_and_bar_sizes(bus, pcidev):
    devfn = pcidev.devfn
    assert bus.config_read(devfn, 0) == 0x00051B36 and bus.config_read(devfn, 0x08) >> 16 == 0xFF00
    assert bus.config_read(devfn, 0x3C) >> 8 & 0xFF == 0  # no interrupt pin
    for bar, expected in ((0x10, 0xFFFFF000), (0x14, 0xFFFFFF01)):
        bus.config_write(devfn, bar, 0xFFFFFFFF)
        assert bus.config_read(devfn, bar) == expected
    assert pcidev.bars[0].address is None and pcidev.bars[1].address is None  # sizing maps nothing


def test_bars_map_move_and_unmap(bus, pcidev):
    _place_bars(bus, pcidev)
    assert pcidev.mmio.parent is bus.system and pcidev.mmio.addr == 0xC0000 and pcidev.mmio.priority == 1
    assert pcidev.portio.parent is bus.io and pcidev.portio.addr == 0xC100
    bus.config_write(pcidev.devfn, 0x14, 0xC200)
    assert pcidev.portio.addr == 0xC200 and pcidev.bars[1].address == 0xC200
    bus.config_write(pcidev.devfn, 0x04, 0x0001, 2)  # memory decoding off
    assert pcidev.mmio.parent is None and pcidev.portio.parent is bus.io
    bus.config_write(pcidev.devfn, 0x14, 0)  # address 0 is "not mapped"
    assert pcidev.portio.parent is None


def test_bar_registration_rules(pcidev):
    with pytest.raises(PciError, match="already registered"):
        pcidev.register_bar(0, 0, MemoryRegion.container("x", 4096))
    with pytest.raises(PciError, match="power of two"):
        pcidev.register_bar(3, 0, MemoryRegion.container("x", 3000))
    with pytest.raises(PciError, match="no BAR 5"):
        pcidev.register_bar(5, 0x04, MemoryRegion.container("x", 4096))
    membar = PciTestdev(membar_size=1 << 20)
    try:
        assert membar.bars[2].is_64bit and membar.config[0x18] == 0x0C
    finally:
        membar.close()


@pytest.mark.parametrize("kind, base", [(0, 0xC0000), (1, 0xC100)])
def test_header_of_each_test(bus, pcidev, kind, base):
    _place_bars(bus, pcidev)
    space = bus.memory if kind == 0 else bus.io_space
    names = []
    for number in range(3):
        space.write_int(base, number, 1)
        header = bytes(space.read_int(base + i, 1) for i in range(16))
        name = bytes(space.read_int(base + 16 + i, 1) for i in range(24)).split(b"\0")[0]
        names.append(name.decode())
        index = kind * 3 + number
        assert header[0] == index and header[1] == 1
        assert int.from_bytes(header[4:8], "little") == (2048 if kind == 0 else 128) + index
        assert header[8] == (0xCE if number == 1 else 0xFA)
        region = pcidev.mmio if kind == 0 else pcidev.portio
        assert len(region.ioeventfds) == (0 if number == 0 else 1)
    prefix = "mmio" if kind == 0 else "portio"
    assert names == [f"{prefix}-no-eventfd", f"{prefix}-wildcard-eventfd", f"{prefix}-datamatch-eventfd"]
    space.write_int(base, 7, 1)  # no such test: disarmed
    assert pcidev.current is None and not pcidev.mmio.ioeventfds and not pcidev.portio.ioeventfds


def test_writes_that_reach_the_device_are_counted(bus, pcidev):
    _place_bars(bus, pcidev)
    io = bus.io_space
    io.write_int(0xC100, 2, 1)  # portio-datamatch: offset 133, data 0xfa
    for value in (0xFA, 0xFA, 0x00):
        io.write_int(0xC100 + 133, value, 1)
    io.write_int(0xC100 + 134, 0xFA, 1)
    assert pcidev.current.count == 2 and io.read_int(0xC100 + 12, 4) == 2


def test_any_length_mmio_wildcard(bus):
    device = PciTestdev(any_length_mmio=True)
    try:
        assert [t.size for t in device.tests] == [1, 0, 1, 1, 1, 1]
    finally:
        device.close()


# ------------------------------------------------------------------ on KVM
def _assemble(tmp_path, source: str) -> bytes:
    (tmp_path / "g.asm").write_text("bits 16\norg 0x7c00\n" + source)
    subprocess.run(["nasm", "-f", "bin", "-o", str(tmp_path / "g.bin"), str(tmp_path / "g.asm")], check=True)
    return (tmp_path / "g.bin").read_bytes()


def _run(machine, code: bytes) -> None:
    machine.memory.write(0x7C00, code)
    machine.vcpu.set_real_mode(0, 0x7C00)
    assert machine.run(timeout=30).reason == "hlt"


@pytest.mark.kvm
def test_string_io_on_the_scratch_port(tmp_path):
    from kvmshim.machine import Machine

    code = _assemble(tmp_path, """
    xor ax, ax
    mov ds, ax
    mov es, ax
    cld
    mov dx, 0xe0
    mov si, src
    mov cx, 4
    rep outsb           ; e0 <- 11 22 33 44: the last byte stays
    mov di, 0x600
    mov cx, 4
    rep insb
    mov si, srcw
    mov cx, 2
    rep outsw           ; e0 <- 6655, 8877
    mov di, 0x604
    mov cx, 1
    rep insd
    mov dx, 0xe8
    mov si, srcd
    mov cx, 1
    rep outsd           ; e8 (byte lanes) <- 0xcafef00d
    mov dx, 0xe0
    mov di, 0x608
    mov cx, 1
    rep insd
    hlt
src:  db 0x11, 0x22, 0x33, 0x44
srcw: dw 0x6655, 0x8877
srcd: dd 0xcafef00d
""")
    with Machine() as m:
        device = PcTestdev(memory=m.memory)
        device.map(m.system, m.io)
        _run(m, code)
        assert m.memory.read(0x600, 12)[0] == bytes([0x44] * 4) + (0x8877).to_bytes(4, "little") + \
            (0xCAFEF00D).to_bytes(4, "little")


@pytest.mark.kvm
@pytest.mark.parametrize("number, absorbed", [(0, False), (1, True), (2, True)])
@pytest.mark.parametrize("kind", [0, 1])
def test_ioeventfds_absorb_the_writes_in_kvm(tmp_path, kind, number, absorbed):
    """kvm-unit-tests' pci-testdev check: 16 writes at the test's offset are either all counted by
    the device (no-eventfd) or all absorbed by KVM's ioeventfd (count stays 0, the eventfd has 16)."""
    from kvmshim.machine import Machine

    index = kind * 3 + number
    value = 0xCE if number == 1 else 0xFA
    if kind == 0:
        store = f"mov ax, 0xc000\nmov es, ax\n.l: mov byte [es:{2048 + index}], {value}\nloop .l"
    else:
        store = f"mov dx, {0xC100 + 128 + index}\nmov al, {value}\n.l: out dx, al\nloop .l"
    code = _assemble(tmp_path, f"mov cx, 16\n{store}\nhlt\n")
    with Machine() as m:
        host = PciHost([], memory=m.system)
        host.map(m.io)
        device = PciTestdev()
        host.add(device)
        try:
            for offset, setting in ((0x10, 0xC0000), (0x14, 0xC100), (0x04, 0x0003)):
                m.io_space.write_int(0xCF8, 1 << 31 | device.devfn << 8 | offset, 4)
                m.io_space.write_int(0xCFC, setting, 4)
            (m.memory if kind == 0 else m.io_space).write_int(0xC0000 if kind == 0 else 0xC100, number, 1)
            _run(m, code)
            test = device.current
            assert test.count == (0 if absorbed else 16)
            if absorbed:
                assert test.notifier.read() == 16
        finally:
            device.close()


@pytest.mark.kvm
def test_the_pc_machines_testdev_flushes_its_guest_ram():
    """-device pc-testdev on the pc machine: the flush port remaps the page of the machine's own
    memory (with no memory it could only log), and the guest's bytes survive."""
    from kvmshim.pc.machine import PcMachine
    from kvmshim.qemu_options import parse_command_line

    with PcMachine(parse_command_line(["-nodefaults", "-device", "pc-testdev"])) as m:
        (testdev,) = m.board.testdevs
        assert testdev.memory is m.memory
        m.memory.write(0x5000, b"flush me" * 8)
        m.io_space.write_int(0xE4, 0x5000, 4)
        assert testdev.flushed == [0x5000] and m.memory.read(0x5000, 64)[0] == b"flush me" * 8
