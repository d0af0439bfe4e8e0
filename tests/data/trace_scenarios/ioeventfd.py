"""ioeventfds assigned and deassigned: MMIO (32-bit datamatch) | PIO (16-bit datamatch)."""
from _scenario import NO_OPS, Notifier, Spaces, mark, report

import memapi
from kvm import Kvm

kvm = Kvm()
spaces = Spaces(kvm.create_vm())
mmio = memapi.MemoryRegion.io("mmio-dev", 0x1000, NO_OPS)
port = memapi.MemoryRegion.io("port-dev", 8, NO_OPS)
spaces.root.add_subregion(0xFE000000, mmio)
spaces.io_root.add_subregion(0x700, port)
mmio_fd, pio_fd = Notifier(), Notifier()
mark(kvm)
mmio.add_eventfd(0x10, 4, True, 0x1_2345_6789, mmio_fd)
mmio.del_eventfd(0x10, 4, True, 0x1_2345_6789, mmio_fd)
mark(kvm)
port.add_eventfd(0, 2, True, 0x12345, pio_fd)
port.del_eventfd(0, 2, True, 0x12345, pio_fd)
mark(kvm)
report(mmio_fd=mmio_fd.fd, pio_fd=pio_fd.fd)
