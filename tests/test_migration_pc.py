"""The pc machine migrates after SeaBIOS's POST: PAM, PCI BARs, PMBASE, the in-kernel PICs, IOAPIC
and PIT, the LAPIC and every device model arrive; the destination's map (`info mtree -f`) is the
source's, and stays so while SeaBIOS idles on at its prompt there."""
from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kvmshim.migration import Listener, resume
from kvmshim.migration.vmstate import find_devices
from kvmshim.pc.ata import DiskImage
from kvmshim.pc.image_lock import ImageLockError
from kvmshim.pc.machine import PcMachine, seabios_config
from kvmshim.qemu_config import Chardev, Drive, IsaDebugcon, IsaDebugExit, PciTestdev, PcTestdev
from test_migration import migrate_between

pytestmark = pytest.mark.kvm  # and Debian's SeaBIOS, which make test installs


def test_the_pc_machine_after_post_migrates_with_its_map(tmp_path):
    config = seabios_config(vga="std", devices=(IsaDebugcon(Chardev("null"), iobase=0x402), IsaDebugExit(),
                                                PcTestdev(), PciTestdev()))
    with PcMachine(config, stop_at_post_end=True) as src, PcMachine(config) as dst, ThreadPoolExecutor(1) as pool:
        assert src.boot().reason == "stopped" and b"No bootable device" in src.log
        names = {name for name, _ in find_devices(src)}
        assert names == {"I440FX/0", "pci-host/0", "PIIX3/0", "piix4_pm/0", "ide/0", "serial/0", "mc146818rtc/0",
                         "fw_cfg/0", "port92/0", "vga/0", "isa-debugcon/0", "isa-debug-exit/0", "pc-testdev/0",
                         "pci-testdev/0"}
        thread = src.start()  # SeaBIOS idles at its prompt, the PIT ticking
        time.sleep(0.3)
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            stats, got = migrate_between(pool, src, dst, listener, verify=True)
        assert thread.join(10).reason == "stopped"
        assert stats.verified and got.running == [True]
        source_map = src.mtree(flatview=True)
        assert "00000000000f0000-00000000000fffff (prio 0, rom): pc.ram" in source_map  # PAM: the BIOS shadowed
        assert dst.mtree(flatview=True) == source_map
        assert dst.vm.get_pit2() .c.channels[0].count == src.vm.get_pit2().c.channels[0].count
        threads = resume(dst, got)
        time.sleep(0.5)
        assert dst.mtree(flatview=True) == source_map
        for thread in threads:
            assert thread.stop().reason == "stopped"


def test_a_shared_disk_passes_to_the_destination_at_the_stop(tmp_path):
    """Shared storage, as QEMU migrates it: the destination (``incoming``, QEMU's -incoming) opens
    the image without its locks, the source lets go of it once its vCPUs stopped, and the
    destination holds it once the guest has arrived; a third user is refused throughout."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    config = seabios_config(drives=(Drive(image, 0, "raw"),))
    with PcMachine(config, stop_at_post_end=True) as src, PcMachine(config, incoming=True) as dst, \
            ThreadPoolExecutor(1) as pool:
        (source,), (destination,) = src.board.images, dst.board.images
        assert src.boot().reason == "stopped" and source.active and not destination.active
        with Listener(f"unix:{tmp_path}/m.sock") as listener:
            stats, got = migrate_between(pool, src, dst, listener, verify=True)
        assert stats.verified and destination.active and not source.active
        with pytest.raises(ImageLockError):
            DiskImage(image)


def test_run_machine_pc_incoming_takes_over_a_booted_pc(tmp_path):
    """`kvmshim run --machine pc --incoming URI` builds the pc machine from the same options as the
    source, loads it and idles on at SeaBIOS's prompt (it is stopped here, having no end)."""
    from kvmshim.cli import _parser
    from kvmshim.migration import migrate
    from kvmshim.pc import cli as pc_cli

    uri = f"unix:{tmp_path}/m.sock"
    destination = subprocess.Popen([sys.executable, "-m", "kvmshim.cli", "run", "--machine", "pc", "--incoming", uri],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        config = pc_cli.config(_parser().parse_args(["run", "--machine", "pc"]))
        with PcMachine(config, stop_at_post_end=True) as src:
            src.boot()
            src.start()
            stats = migrate(src, uri, verify=True)
        assert stats.verified
        line = destination.stderr.readline()
        assert line.startswith("kvmshim: incoming: ") and line.endswith("; resuming\n")
        time.sleep(0.5)
        assert destination.poll() is None  # SeaBIOS idles on there
    finally:
        destination.kill()
        destination.communicate()
