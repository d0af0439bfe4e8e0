"""QEMU's test devices, as kvm-unit-tests uses them: isa-debug-exit, pc-testdev and pci-testdev.

``isa-debug-exit`` (hw/misc/debugexit.c) ends the run with status ``(value << 1) | 1``.
``pc-testdev`` (hw/misc/pc-testdev.c) is a 32-bit scratch latch at 0xe0 (any size, byte
lanes by port) and again at 0xe8 split into bytes, a page-flush port at 0xe4, 24 ISA IRQ
lines at 0x2000 and 64 KiB of scratch MMIO at 0xff000000. ``pci-testdev``
(hw/misc/pci-testdev.c, 1b36:0005) has a memory BAR0 and an I/O BAR1 whose first bytes are
the current test's header; writing a test number arms that test's ioeventfd.
"""
from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable

from memapi import AccessRules, AddressSpace, Endianness, EventNotifier, MemoryRegion, MemoryRegionOps

from ..migration.vmstate import VMStateDescription, check_index
from .pci import BAR_MEM_PREFETCH, BAR_MEM_TYPE_64, BAR_SPACE_IO, INTERRUPT_PIN, PciDevice, devfn
from .ports import Read, Write, port_region

DEBUG_EXIT_IOBASE, DEBUG_EXIT_IOSIZE = 0x501, 0x02
TESTDEV_IOPORT, TESTDEV_FLUSH, TESTDEV_IOPORT_BYTE, TESTDEV_IRQ = 0xE0, 0xE4, 0xE8, 0x2000
TESTDEV_IRQ_LINES = 24
TESTDEV_IOMEM, TESTDEV_IOMEM_SIZE = 0xFF000000, 0x10000
PAGE = 4096
PROT_NONE = 0  # the mmap module has PROT_READ and PROT_WRITE but not this

PCI_TESTDEV_VENDOR, PCI_TESTDEV_DEVICE, PCI_CLASS_OTHERS = 0x1B36, 0x0005, 0xFF00
IOTEST_IOSIZE, IOTEST_MEMSIZE = 128, 2048
IOTEST_DATAMATCH, IOTEST_NOMATCH = 0xFA, 0xCE
IOTEST_TESTS = ("no-eventfd", "wildcard-eventfd", "datamatch-eventfd")
IOTEST_TYPES = ("mmio", "portio")
#: PCITestDevHdr: test (u8), width (u8), 2 pad, offset (u32), data (u8), 3 pad, count (u32), name.
HDR_TEST, HDR_WIDTH, HDR_OFFSET, HDR_DATA, HDR_COUNT, HDR_NAME = 0, 1, 4, 8, 12, 16


def _reads_zero(mr: MemoryRegion, offset: int, size: int) -> int:
    return 0


class IsaDebugExit:
    """``isa-debug-exit`` at ``iobase`` (``iosize`` ports): a write ends the run; reads give 0."""

    vmstate = VMStateDescription("isa-debug-exit", fields=("status",))

    def __init__(self, on_exit: Callable[[int], None], iobase: int = DEBUG_EXIT_IOBASE,
                 iosize: int = DEBUG_EXIT_IOSIZE) -> None:
        if not 0 <= iobase < 0x10000 or not 1 <= iosize <= 0x10000 - iobase:
            raise ValueError(f"isa-debug-exit: iobase {iobase:#x} and iosize {iosize:#x} leave the I/O space")
        self.on_exit = on_exit
        self.iobase = iobase
        self.status: int | None = None
        self.region = port_region("isa-debug-exit", iosize, _reads_zero, self._write,
                                  valid=AccessRules(1, 4), impl=AccessRules(1, 4))

    def map(self, io: MemoryRegion) -> None:
        io.add_subregion(self.iobase, self.region)

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.status = value << 1 | 1  # QEMU exits with this (the shell sees its low byte)
        self.on_exit(self.status)


class PcTestdev:
    """``pc-testdev``. ``set_irq(line, level)`` drives ISA IRQ ``line``; ``memory`` (the guest's
    memory AddressSpace) lets the flush port drop the host mapping of a RAM page, as QEMU's
    mprotect does, so that KVM has to fault it back in."""

    vmstate = VMStateDescription("pc-testdev", fields=("ioport_data", "iomem"))  # ``flushed`` is the host's log

    def __init__(self, set_irq: Callable[[int, int], None] | None = None,
                 memory: AddressSpace | None = None) -> None:
        self.set_irq = set_irq
        self.memory = memory
        self.ioport_data = 0
        self.iomem = bytearray(TESTDEV_IOMEM_SIZE)
        self.flushed: list[int] = []
        self.ioport = port_region("pc-testdev-ioport", 4, self._ioport_read, self._ioport_write,
                                  impl=AccessRules(1, 4))
        self.ioport_byte = port_region("pc-testdev-ioport-byte", 4, self._ioport_read, self._ioport_write,
                                       valid=AccessRules(1, 4))
        self.flush = port_region("pc-testdev-flush-page", 4, _reads_zero, self._flush_write,
                                 valid=AccessRules(4, 4), impl=AccessRules(4, 4))
        self.irq = port_region("pc-testdev-irq-line", TESTDEV_IRQ_LINES, _reads_zero,
                               self._irq_write, valid=AccessRules(1, 1))
        self.iomem_region = _mmio_region("pc-testdev-iomem", TESTDEV_IOMEM_SIZE, self._iomem_read,
                                         self._iomem_write, AccessRules(1, 4))

    def map(self, system: MemoryRegion, io: MemoryRegion) -> None:
        io.add_subregion(TESTDEV_IOPORT, self.ioport)
        io.add_subregion(TESTDEV_FLUSH, self.flush)
        io.add_subregion(TESTDEV_IOPORT_BYTE, self.ioport_byte)
        io.add_subregion(TESTDEV_IRQ, self.irq)
        system.add_subregion(TESTDEV_IOMEM, self.iomem_region)

    def _ioport_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        shift = 8 * (offset & 3)
        return self.ioport_data >> shift & (1 << 8 * size) - 1

    def _ioport_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        shift = 8 * (offset & 3)
        mask = ((1 << 8 * size) - 1) << shift
        self.ioport_data = (self.ioport_data & ~mask | value << shift) & 0xFFFFFFFF

    def _irq_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if self.set_irq is not None:
            self.set_irq(offset, int(bool(value)))

    def _flush_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        """test_flush_page: unmap and remap the host page behind guest RAM page ``value``."""
        page = value & ~(PAGE - 1)
        self.flushed.append(page)
        flat = self.memory.lookup(page) if self.memory is not None else None
        if flat is None or flat.mr.ram_block is None:
            return
        block = flat.mr.ram_block
        host = block.host_addr + flat.offset_in_region + page - flat.start
        if host % mmap.PAGESIZE or host + PAGE > block.host_addr + block.max_length:
            return  # a caller's unaligned buffer: nothing QEMU could mprotect either
        _mprotect(host, PAGE, PROT_NONE)
        _mprotect(host, PAGE, mmap.PROT_READ | mmap.PROT_WRITE)

    def _iomem_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        return int.from_bytes(self.iomem[offset:offset + size], "little")

    def _iomem_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self.iomem[offset:offset + size] = value.to_bytes(size, "little")


def _mmio_region(name: str, size: int, read: Read, write: Write, impl: AccessRules) -> MemoryRegion:
    return MemoryRegion.io(name, size, MemoryRegionOps(read=read, write=write, endianness=Endianness.LITTLE,
                                                       impl=impl))


_libc = ctypes.CDLL(None, use_errno=True)


def _mprotect(address: int, length: int, prot: int) -> None:
    if _libc.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(length), ctypes.c_int(prot)):
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect({address:#x}, {length:#x}): {os.strerror(err)}")


class IoTest:
    """One of pci-testdev's six tests: its header bytes and, but for no-eventfd, its ioeventfd."""

    def __init__(self, index: int, region: MemoryRegion, any_length: bool) -> None:
        kind, test = IOTEST_TYPES[index // 3], IOTEST_TESTS[index % 3]
        name = f"{kind}-{test}".encode()
        self.region = region
        self.match_data = test != "wildcard-eventfd"
        self.size = 0 if any_length and kind == "mmio" and not self.match_data else 1
        self.offset = (IOTEST_MEMSIZE if kind == "mmio" else IOTEST_IOSIZE) + index
        self.data = IOTEST_DATAMATCH if self.match_data else IOTEST_NOMATCH
        self.header = bytearray(HDR_NAME + len(name) + 1)
        self.header[HDR_TEST], self.header[HDR_WIDTH], self.header[HDR_DATA] = index, 1, self.data
        self.header[HDR_OFFSET:HDR_OFFSET + 4] = self.offset.to_bytes(4, "little")
        self.header[HDR_NAME:HDR_NAME + len(name)] = name
        self.notifier = EventNotifier() if test != "no-eventfd" else None

    @property
    def count(self) -> int:
        return int.from_bytes(self.header[HDR_COUNT:HDR_COUNT + 4], "little")

    def start(self) -> None:
        self.header[HDR_COUNT:HDR_COUNT + 4] = bytes(4)
        if self.notifier is not None:
            self.notifier.test_and_clear()
            self.region.add_eventfd(self.offset, self.size, self.match_data, self.data, self.notifier)

    def stop(self) -> None:
        if self.notifier is not None:
            self.region.del_eventfd(self.offset, self.size, self.match_data, self.data, self.notifier)

    def count_write(self) -> None:
        self.header[HDR_COUNT:HDR_COUNT + 4] = (self.count + 1 & 0xFFFFFFFF).to_bytes(4, "little")


class PciTestdev(PciDevice):
    """``pci-testdev`` at ``devfn``. ``any_length_mmio`` mirrors KVM_CAP_IOEVENTFD_ANY_LENGTH (the MMIO
    wildcard test then uses a length-0 ioeventfd); ``membar_size`` adds QEMU's optional 64-bit BAR2."""

    #: The config space, the armed test (its ioeventfd is re-armed) and every test's count.
    vmstate = VMStateDescription("pci-testdev", fields=("config", "current_test", "test_counts"))

    def __init__(self, devfn: int = devfn(3, 0), *, any_length_mmio: bool = False, membar_size: int = 0) -> None:
        super().__init__(devfn, PCI_TESTDEV_VENDOR, PCI_TESTDEV_DEVICE, PCI_CLASS_OTHERS)
        self.config[INTERRUPT_PIN] = 0
        ops = AccessRules(1, 1)
        self.mmio = _mmio_region("pci-testdev-mmio", IOTEST_MEMSIZE * 2, self._read, self._mmio_write, ops)
        self.portio = port_region("pci-testdev-portio", IOTEST_IOSIZE * 2, self._read, self._pio_write, impl=ops)
        self.register_bar(0, 0, self.mmio)
        self.register_bar(1, BAR_SPACE_IO, self.portio)
        if membar_size:
            self.membar = MemoryRegion.container("pci-testdev-membar", membar_size)
            self.register_bar(2, BAR_MEM_PREFETCH | BAR_MEM_TYPE_64, self.membar)
        self.tests = [IoTest(i, self.mmio if i < 3 else self.portio, any_length_mmio) for i in range(6)]
        self.current: IoTest | None = None

    @property
    def current_test(self) -> int | None:
        """The index of the armed test in ``tests``, None if none is."""
        return None if self.current is None else self.tests.index(self.current)

    @current_test.setter
    def current_test(self, index: int | None) -> None:
        self.reset()
        if index is not None:
            check_index("pci-testdev test", index, len(self.tests))
            self.current = self.tests[index]
            self.current.start()

    @property
    def test_counts(self) -> list[int]:
        return [test.count for test in self.tests]

    @test_counts.setter
    def test_counts(self, counts: list[int]) -> None:
        if len(counts) != len(self.tests) or not all(isinstance(c, int) and 0 <= c < 1 << 32 for c in counts):
            raise ValueError(f"pci-testdev: counts {counts!r:.60} (one u32 per test)")
        for test, count in zip(self.tests, counts, strict=True):
            test.header[HDR_COUNT:HDR_COUNT + 4] = count.to_bytes(4, "little")

    def reset(self) -> None:
        """pci_testdev_reset: disarm the current test."""
        if self.current is not None:
            self.current.stop()
            self.current = None

    def close(self) -> None:
        """Disarm and close the eventfds."""
        self.reset()
        for test in self.tests:
            if test.notifier is not None:
                test.notifier.close()

    def _write(self, offset: int, value: int, size: int, kind: int) -> None:
        if offset == HDR_TEST:
            self.reset()
            if value < len(IOTEST_TESTS):
                self.current = self.tests[kind * len(IOTEST_TESTS) + value]
                self.current.start()
            return
        test = self.current
        if test is None or offset != test.offset:
            return
        if test.match_data and (size != test.size or value != test.data):
            return
        test.count_write()

    def _mmio_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self._write(offset, value, size, 0)

    def _pio_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        self._write(offset, value, size, 1)

    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        test = self.current
        if test is None or offset + size >= len(test.header):
            return 0
        if test.notifier is not None:
            test.notifier.test_and_clear()
        return test.header[offset]
