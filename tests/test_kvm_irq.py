"""Interrupts through the in-kernel irqchip on real KVM: irqfd (with resample), IRQ_LINE_STATUS,
GSI routing and MSIs, seen by a real-mode guest that programs the PIC and counts interrupts."""
from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

import pytest

import guests
from kvm import ExitReason, IoDirection, IrqchipId, IrqchipRoute, KvmError, MsiRoute
from test_kvm_binding import RAM_SIZE, host_addr, system  # noqa: F401 (fixture)

pytestmark = pytest.mark.kvm
GUEST = Path(__file__).parent / "data" / "guests" / "pic-count.S"
IRQ = 5  # the PIC line the guest unmasks
REPORT_PORT, EXIT_PORT = 0x600, 0x501
HANG_GUARD = 20.0  # seconds before a guest stuck in HLT is kicked out (the test then fails)


class PicGuest:
    """pic-count on a VM with KVM_CREATE_IRQCHIP; ``report()`` runs it to its next OUT."""

    def __init__(self, vm, vcpu, ram) -> None:
        self.vm, self.vcpu, self.ram = vm, vcpu, ram

    def report(self) -> tuple[str, int]:
        """("count", n) for a report on port 0x600, ("exit", status) for the debug-exit port."""
        guard = threading.Timer(HANG_GUARD, self.vcpu.kick)
        guard.start()
        try:
            while True:
                reason = self.vcpu.run()
                assert reason == ExitReason.IO, f"unexpected exit {ExitReason(reason).name}"
                record = self.vcpu.exit_record()
                assert record.direction == IoDirection.OUT and record.port in (REPORT_PORT, EXIT_PORT), record
                return ("count" if record.port == REPORT_PORT else "exit", record.data[0])
        finally:
            guard.cancel()


@pytest.fixture
def pic_guest(system):
    spec = guests.spec(GUEST)
    image = guests.build(GUEST).read_bytes()
    ram = mmap.mmap(-1, RAM_SIZE)
    ram[spec.load_gpa:spec.load_gpa + len(image)] = image
    with system.create_vm() as vm:
        vm.create_irqchip()
        vm.set_user_memory_region(0, 0, RAM_SIZE, host_addr(ram))
        with vm.create_vcpu(0) as vcpu:
            vcpu.set_real_mode(spec.cs, spec.ip, sp=spec.sp)
            guest = PicGuest(vm, vcpu, ram)
            assert guest.report() == ("count", 0)  # PIC programmed, waiting in HLT
            yield guest


@pytest.fixture
def eventfds():
    fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(2)]
    yield fds
    for fd in fds:
        os.close(fd)


def test_eventfd_write_raises_the_irq(pic_guest, eventfds):
    trigger, _ = eventfds
    pic_guest.vm.assign_irqfd(trigger, IRQ)
    for n in (1, 2, 3):
        os.eventfd_write(trigger, 1)
        assert pic_guest.report() == ("count", n)
    assert pic_guest.report() == ("exit", 0)  # the guest stops after three
    pic_guest.vm.deassign_irqfd(trigger, IRQ)


def test_resamplefd_is_signalled_at_the_guests_eoi(pic_guest, eventfds):
    trigger, resample = eventfds
    pic_guest.vm.assign_irqfd(trigger, IRQ, resamplefd=resample)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(resample)
    os.eventfd_write(trigger, 1)
    assert pic_guest.report() == ("count", 1)
    assert os.eventfd_read(resample) == 1  # the EOI lowered the line and told us
    os.eventfd_write(trigger, 1)  # a new level: a new edge for the PIC
    assert pic_guest.report() == ("count", 2)


def test_irq_line_status_raises_the_irq(pic_guest):
    assert pic_guest.vm.irq_line_status(IRQ, 1) > 0
    assert pic_guest.report() == ("count", 1)
    pic_guest.vm.irq_line_status(IRQ, 0)


def test_gsi_routing_sends_a_new_gsi_to_the_pic(pic_guest, eventfds):
    trigger, _ = eventfds
    pic_guest.vm.set_gsi_routing([IrqchipRoute(gsi, IrqchipId.PIC_MASTER, gsi) for gsi in range(8)]
                                 + [IrqchipRoute(40, IrqchipId.PIC_MASTER, IRQ), MsiRoute(41, 0xFEE00000, 0x30)])
    pic_guest.vm.assign_irqfd(trigger, 40)
    os.eventfd_write(trigger, 1)
    assert pic_guest.report() == ("count", 1)


def test_irqfd_errors(pic_guest, eventfds, system):
    trigger, _ = eventfds
    pic_guest.vm.assign_irqfd(trigger, IRQ)
    with pytest.raises(KvmError, match=rf"KVM_IRQFD: EBUSY .*fd={trigger} gsi=6 flags=0\]"):
        pic_guest.vm.assign_irqfd(trigger, 6)  # one eventfd, two GSIs
    with system.create_vm() as vm, pytest.raises(KvmError, match="KVM_IRQFD: EINVAL"):
        vm.assign_irqfd(trigger, IRQ)  # no irqchip


def test_routing_and_msi_errors(pic_guest, system):
    vm = pic_guest.vm
    with pytest.raises(KvmError, match=r"KVM_SET_GSI_ROUTING: EINVAL .*nr=1 gsi=0->IOAPIC:99"):
        vm.set_gsi_routing([IrqchipRoute(0, IrqchipId.IOAPIC, 99)])
    with pytest.raises(TypeError, match="neither an IrqchipRoute nor an MsiRoute"):
        vm.set_gsi_routing([(0, 1, 2)])
    assert vm.signal_msi(0xFEE00000, 0x30) == 0  # the APIC is software-disabled in real mode
    with system.create_vm() as bare:
        with pytest.raises(KvmError, match=r"KVM_IRQ_LINE_STATUS: ENXIO .*irq=5 level=1"):
            bare.irq_line_status(IRQ, 1)
        with pytest.raises(KvmError, match=r"KVM_SIGNAL_MSI: EINVAL"):
            bare.signal_msi(0xFEE00000, 0x30)
