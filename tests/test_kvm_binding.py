"""The kvm binding against the real /dev/kvm (no mocks)."""
import errno
import mmap
import os
import threading
import time

import pytest

import guests
import kvm
from kvm import Cap, ExitReason, IoDirection, KvmError, MemFlag, SyncReg, ffi

RAM_SIZE = 0xA0000
JMP_SELF = b"\xeb\xfe"  # jmp .
OUT_AL_0x80_LOOP = bytes.fromhex("e680ebfc")  # 1: outb %al, $0x80; jmp 1b
HLT = b"\xf4"
MOV_BYTE_0x3000_HLT = bytes.fromhex("c606003001f4")  # movb $1, (0x3000); hlt


@pytest.fixture(scope="module")
def system():
    try:
        k = kvm.Kvm()
    except OSError as e:
        pytest.skip(f"/dev/kvm cannot be opened: {e}")
    with k:
        yield k


def host_addr(buf) -> int:
    ptr = ffi.from_buffer(buf)
    try:
        return int(ffi.cast("uintptr_t", ptr))
    finally:
        ffi.release(ptr)


@pytest.fixture
def machine(system):
    """A VM with RAM at GPA 0 in slot 0 and vCPU 0; yields (vm, vcpu, ram)."""
    ram = mmap.mmap(-1, RAM_SIZE)
    with system.create_vm() as vm:
        vm.set_user_memory_region(0, 0, RAM_SIZE, host_addr(ram))
        with vm.create_vcpu(0) as vcpu:
            yield vm, vcpu, ram


def load_flat(vcpu, ram, code: bytes) -> None:
    s = guests.spec("hello")
    ram[s.load_gpa:s.load_gpa + len(code)] = code
    vcpu.set_real_mode(s.cs, s.ip, ds=0, ss=0, sp=s.sp)


def run_serial_guest(vcpu) -> tuple[bytes, int]:
    """Handle KVM_EXIT_IO for the serial and debug-exit ports; returns (output, status)."""
    out = bytearray()
    io = vcpu.run_struct.io
    while True:
        assert vcpu.run() == ExitReason.IO
        data = vcpu.io_data()
        if io.direction == IoDirection.IN:
            assert io.port == 0x3FD
            data[0] = 0x20
        elif io.port == 0x3F8:
            out += data
        else:
            assert io.port == 0x501
            return bytes(out), data[0]


def test_api_version(system):
    assert system.api_version() == 12 == kvm.lib.KVM_API_VERSION


def test_capabilities(system):
    assert system.check_extension(Cap.USER_MEMORY) == 1
    assert system.check_extension(Cap.NR_MEMSLOTS) > 0
    assert system.check_extension(Cap.IMMEDIATE_EXIT) == 1
    assert system.vcpu_mmap_size() >= mmap.PAGESIZE
    with system.create_vm() as vm:
        assert vm.check_extension(Cap.READONLY_MEM) == 1
    assert repr(ExitReason(kvm.lib.KVM_EXIT_IO)) == "<ExitReason.IO: 2>"
    assert MemFlag.READONLY == kvm.lib.KVM_MEM_READONLY


def test_hello_guest_prints_and_exits(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, guests.build("hello").read_bytes())
    assert run_serial_guest(vcpu) == (b"Hello from kvmshim guest!\n", 0)


def test_overlapping_slot_raises_eexist(machine):
    vm, vcpu, ram = machine
    other = mmap.mmap(-1, 0x1000)
    with pytest.raises(KvmError) as err:
        vm.set_user_memory_region(3, 0x2000, 0x1000, host_addr(other), MemFlag.READONLY)
    e = err.value
    assert isinstance(e, OSError) and e.errno == errno.EEXIST
    assert e.ioctl == "KVM_SET_USER_MEMORY_REGION"
    assert "slot=3" in e.args_desc and "gpa=0x2000" in e.args_desc
    assert str(e).startswith("KVM_SET_USER_MEMORY_REGION: EEXIST")
    assert "flags=READONLY" in str(e)


def test_immediate_exit_returns_intr(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, JMP_SELF)
    vcpu.immediate_exit = True
    assert vcpu.run() == ExitReason.INTR
    assert not vcpu.immediate_exit


def test_kick_stops_guest_looping_forever(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, JMP_SELF)
    exits = []
    entered = threading.Event()

    def loop():
        entered.set()
        exits.append(vcpu.run())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    entered.wait()
    time.sleep(0.05)  # let it get into KVM_RUN
    assert thread.is_alive()
    vcpu.kick()
    thread.join(timeout=5)
    assert not thread.is_alive(), "kick did not stop KVM_RUN"
    assert exits == [ExitReason.INTR]
    assert vcpu.get_regs().rip == 0x1000


def test_kick_before_run_makes_next_run_return_at_once(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, JMP_SELF)
    vcpu.kick()
    assert vcpu.run() == ExitReason.INTR


def test_readonly_slot_write_exits_as_mmio_write(machine):
    vm, vcpu, ram = machine
    rom = mmap.mmap(-1, 0x1000)
    rom[:4] = b"ROM!"
    vm.set_user_memory_region(1, 0xE0000, 0x1000, host_addr(rom), MemFlag.READONLY)
    load_flat(vcpu, ram, guests.build("rom-write").read_bytes())
    assert vcpu.run() == ExitReason.MMIO
    mmio = vcpu.run_struct.mmio
    assert (mmio.phys_addr, mmio.len, mmio.is_write) == (0xE0000, 4, 1)
    assert bytes(vcpu.mmio_data()) == b"\x55" * 4
    assert rom[:4] == b"ROM!"


def test_dirty_log_reports_guest_write(machine):
    vm, vcpu, ram = machine
    vm.set_user_memory_region(0, 0, RAM_SIZE, host_addr(ram), MemFlag.LOG_DIRTY_PAGES)
    load_flat(vcpu, ram, MOV_BYTE_0x3000_HLT)
    assert vcpu.run() == ExitReason.HLT
    bitmap = bytearray(kvm.dirty_bitmap_bytes(RAM_SIZE))
    vm.get_dirty_log(0, bitmap)
    assert int.from_bytes(bitmap, "little") >> 3 & 1
    with pytest.raises(ValueError):
        vm.get_dirty_log(0, bytearray(1))


def test_coalesced_mmio_ring_collects_writes(machine):
    vm, vcpu, ram = machine
    vm.register_coalesced_mmio(0xD0000, 0x1000)
    load_flat(vcpu, ram, guests.build("mmio").read_bytes())
    ring = vcpu.coalesced_ring()
    mmio = vcpu.run_struct.mmio
    for expected_read in (0xD0000, 0xD0004):  # reads exit; the write before 0xd0004 is queued
        assert vcpu.run() == ExitReason.MMIO and (mmio.phys_addr, mmio.is_write) == (expected_read, 0)
        vcpu.mmio_data()[:] = bytes(mmio.len)
    assert ring.last - ring.first == 1
    entry = ring.coalesced_mmio[ring.first]
    assert (entry.phys_addr, entry.len, bytes(entry.data[0:4])) == (0xD0004, 4, bytes.fromhex("78563412"))


def test_sync_regs_mirror_get_regs(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, guests.build("hello").read_bytes())
    vcpu.sync_regs = SyncReg.REGS | SyncReg.SREGS
    assert vcpu.run() == ExitReason.IO
    assert vcpu.synced_regs.rip == vcpu.get_regs().rip
    assert vcpu.synced_sregs.cs.selector == 0


def test_synced_regs_written_back_when_marked_dirty(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, OUT_AL_0x80_LOOP)
    vcpu.sync_regs = SyncReg.REGS
    assert vcpu.run() == ExitReason.IO
    vcpu.synced_regs.rax = 0x1234
    vcpu.mark_synced_dirty(SyncReg.REGS)
    assert vcpu.run() == ExitReason.IO
    assert bytes(vcpu.io_data()) == b"\x34"
    assert vcpu.get_regs().rax == 0x1234


def test_real_mode_after_long_mode_drops_paging(machine):
    """set_real_mode() from a long-mode vCPU: KVM_SET_SREGS refuses PG without PE, so paging, PAE
    and EFER go with protected mode, and the guest runs in real mode."""
    vm, vcpu, ram = machine
    sregs = vcpu.get_sregs()
    sregs.cr0, sregs.cr4, sregs.efer = 0x80000011, 0x20, 0x500  # PG|ET|PE, PAE, LMA|LME
    sregs.cr3, sregs.cs.l, sregs.cs.db = 0x9000, 1, 0
    ram[0x9000:0x9008] = (0x1000 | 0x3).to_bytes(8, "little")  # PML4 entry, never walked
    vcpu.set_sregs(sregs)
    load_flat(vcpu, ram, HLT)
    after = vcpu.get_sregs()
    assert (after.cr0 & 0x80000001, after.cr4 & 0x20, after.efer) == (0, 0, 0)
    assert vcpu.run() == ExitReason.HLT


def test_bios_guest_from_reset_state(system):
    s = guests.spec("bios")
    rom = mmap.mmap(-1, 0x10000)
    rom[:] = guests.build("bios").read_bytes()
    with system.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        vm.set_user_memory_region(0, s.load_gpa, len(rom), host_addr(rom), MemFlag.READONLY)
        vm.set_user_memory_region(1, s.alias_gpa, len(rom), host_addr(rom), MemFlag.READONLY)
        vcpu.reset_state()
        sregs = vcpu.get_sregs()
        assert (sregs.cs.selector, sregs.cs.base, vcpu.get_regs().rip) == (0xF000, 0xFFFF0000, 0xFFF0)
        assert run_serial_guest(vcpu) == (b"bios ok\n", 0)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _vcpu_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum("kvm-vcpu" in line for line in f)


def test_close_releases_fds_and_mappings():
    fds, maps = _fds(), _vcpu_maps()
    try:
        k = kvm.Kvm()
    except OSError as e:
        pytest.skip(f"/dev/kvm cannot be opened: {e}")
    with k, k.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        assert _fds() == fds + 3 and _vcpu_maps() == maps + 1
    assert _fds() == fds and _vcpu_maps() == maps
    assert k.closed and vm.closed and vcpu.closed and vcpu.run_struct is None
    with pytest.raises(KvmError) as err:
        vm.create_vcpu(1)
    assert err.value.errno == errno.EBADF


def test_collection_closes_fds():
    fds, maps = _fds(), _vcpu_maps()
    try:
        k = kvm.Kvm()
    except OSError as e:
        pytest.skip(f"/dev/kvm cannot be opened: {e}")
    vm = k.create_vm()
    vcpu = vm.create_vcpu(0)
    del k, vm, vcpu
    assert _fds() == fds and _vcpu_maps() == maps


def test_closing_vm_keeps_vcpu_usable(machine):
    vm, vcpu, ram = machine
    load_flat(vcpu, ram, guests.build("hello").read_bytes())
    vm.close()
    assert not vcpu.closed
    assert run_serial_guest(vcpu)[1] == 0
