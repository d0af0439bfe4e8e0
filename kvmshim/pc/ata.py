"""ATA hard disks on an IDE channel, PIO only, as QEMU's hw/ide/core.c drives them.

A channel (``IdeBus``) has two units that both latch every task-file write; the device
register's DEV bit picks the one that answers. A unit without a disk reads as QEMU shows
it: status and error 0 for an absent slave; all registers 0 if the channel has no disk.
Commands run synchronously (BSY is never seen); data moves through a 16-sector buffer.

Where this differs from QEMU: a sector address outside the disk gets IDNF (QEMU: ABRT),
READ VERIFY checks the range, INITIALIZE DEVICE PARAMETERS sets the CHS translation
(QEMU ignores it), and the DMA, SMART and TRIM commands are aborted (IDENTIFY does not
offer them). As in QEMU, writes to the task file or a new command while DRQ is set are
ignored and the transfer carries on; SRST abandons it. Data written by the guest reaches
the image only when a whole block has arrived, so an abandoned transfer leaves the image
as it was; a failing host I/O answers ABRT, never an exception. An image given without a format
is probed as QEMU probes it (``probe_format``): kvmshim refuses any format but raw, and refuses
the guest a sector 0 that would change what the probe finds (ABRT).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from memapi import AccessRules, MemoryRegion

from ..errors import KvmshimError
from ..migration.vmstate import VMStateDescription, check_index
from .image_lock import lock_image, unlock_image
from .ports import port_region

SECTOR = 512
MAX_MULT_SECTORS = 16
#: hw_compat 2.5 onwards: what QEMU puts in IDENTIFY's firmware revision.
HW_VERSION = "2.5+"
DEFAULT_MODEL = "QEMU HARDDISK"

# Status register
ERR, DRQ, DSC, DF, DRDY, BSY = 0x01, 0x08, 0x10, 0x20, 0x40, 0x80
# Error register
ABRT, IDNF = 0x04, 0x10
# Device register
DEV_HS, DEV_SELECT, DEV_LBA, DEV_ALWAYS_ON = 0x0F, 0x10, 0x40, 0xA0
# Device control register
CTRL_NIEN, CTRL_SRST, CTRL_HOB = 0x02, 0x04, 0x80
# Task-file registers (offsets from the command block base)
DATA, ERROR_FEATURE, SECTOR_COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS_COMMAND = range(8)

# Commands
RECALIBRATE, READ, READ_RETRY, READ_EXT, READ_NATIVE_MAX_EXT, READ_MULTIPLE_EXT = 0x10, 0x20, 0x21, 0x24, 0x27, 0x29
WRITE, WRITE_RETRY, WRITE_EXT, WRITE_MULTIPLE_EXT, WRITE_VERIFY = 0x30, 0x31, 0x34, 0x39, 0x3C
VERIFY, VERIFY_RETRY, VERIFY_EXT, SEEK, DIAGNOSE, INITIALIZE_PARAMETERS = 0x40, 0x41, 0x42, 0x70, 0x90, 0x91
READ_MULTIPLE, WRITE_MULTIPLE, SET_MULTIPLE = 0xC4, 0xC5, 0xC6
CHECK_POWER_MODE, CHECK_POWER_MODE_OLD = 0xE5, 0x98
FLUSH_CACHE, FLUSH_CACHE_EXT, IDENTIFY, SET_FEATURES, SECURITY_FREEZE_LOCK, READ_NATIVE_MAX = (
    0xE7, 0xEA, 0xEC, 0xEF, 0xF5, 0xF8)
#: Standby, idle and sleep in their ATA-1 and ATA-3+ codes: accepted, nothing to do.
POWER_COMMANDS = (0x94, 0x95, 0x96, 0x97, 0x99, 0xE0, 0xE1, 0xE2, 0xE3, 0xE6)

#: BIOS CHS translations as pc_cmos_init writes them (BIOS_ATA_TRANSLATION_* - 1 in CMOS 0x39).
TRANSLATION_NONE, TRANSLATION_LBA, TRANSLATION_LARGE = 1, 2, 3


class DiskImageError(KvmshimError):
    """A disk image kvmshim cannot attach: it does not open, or it is in a format other than raw."""


#: QEMU's BLOCK_PROBE_BUF_SIZE: the format probes look at the first sector only.
PROBE_SIZE = SECTOR
_VMDK_DESCRIPTOR = re.compile(rb"(?:#[^\n]*\n| +\r?\n)*version=[123]\r?\n")
_CLOOP_MAGIC = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
_BOCHS_HEADER = (b"Bochs Virtual HD Image\0", b"Redolog\0", b"Growing\0")


def probe_format(head: bytes, filename: str | None = None) -> str:
    """bdrv_probe_all as QEMU 7.2 runs it: the format the first sector (zero padded) shows, else "raw".
    ``filename`` counts for dmg only, which QEMU knows by its ``.dmg`` name."""
    head = head[:PROBE_SIZE].ljust(PROBE_SIZE, b"\0")
    version = int.from_bytes(head[4:8], "big")
    checks = (
        ("qcow", head[:4] == b"QFI\xfb" and version == 1),
        ("qcow2", head[:4] == b"QFI\xfb" and version >= 2),
        ("qed", head[:4] == b"QED\0"),
        ("vdi", head[0x40:0x44] == b"\x7f\x10\xda\xbe"),
        ("vhdx", head[:8] == b"vhdxfile"),
        ("vpc", head[:8] == b"conectix"),
        ("vmdk", head[:4] in (b"KDMV", b"COWD") or _VMDK_DESCRIPTOR.match(head) is not None),
        ("parallels", head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt") and head[16:20] == b"\2\0\0\0"),
        ("luks", head[:8] == b"LUKS\xba\xbe\0\1"),
        ("bochs", (head[:23], head[32:40], head[48:56]) == _BOCHS_HEADER
         and head[64:68] in (b"\0\0\1\0", b"\0\0\2\0")),
        ("cloop", head.startswith(_CLOOP_MAGIC)),
        ("dmg", filename is not None and len(filename) > 4 and filename.endswith(".dmg")),
    )
    return next((name for name, found in checks if found), "raw")


def probed_raw_warning(path: str | Path) -> str:
    """QEMU's warning for an image opened without ``format=`` that probed as raw."""
    return (f"Image format was not specified for '{path}' and probing guessed raw.\n"
            "         Automatically detecting the format is dangerous for raw images, write operations on "
            "block 0 will be restricted.\n"
            "         Specify the 'raw' format explicitly to remove the restrictions.")


class DiskImage:
    """A raw image file; ``readonly`` opens it O_RDONLY. Writes go straight to the file, ``flush`` fsyncs.

    ``format`` None probes the image as QEMU does when ``format=`` is not given: another format
    is refused (used as raw, its first guest write would corrupt it), and ``probed`` is set, so a
    write to sector 0 that would make the image probe as another format fails (PermissionError,
    QEMU's EPERM). As in QEMU, a size that is not a multiple of 512 is rounded up: the tail reads
    as zeros, and a write there extends the file.

    An active image holds QEMU's locks (kvmshim.pc.image_lock), so a second writer, kvmshim or
    QEMU, is refused. ``active=False`` is a migration destination's image (QEMU's inactive image
    under ``-incoming``): no locks and no writes until ``activate()``, after the source's
    ``inactivate()`` handed it over.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, format: str | None = "raw",
                 active: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.probed = format is None
        self.active = False
        if format not in (None, "raw"):
            raise DiskImageError(f"disk image '{path}': format '{format}' (kvmshim reads raw images only)")
        try:
            self.fd = os.open(self.path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as err:  # QEMU's wording
            raise DiskImageError(f"Could not open '{path}': {err.strerror}") from None
        try:
            size = os.lseek(self.fd, 0, os.SEEK_END)  # a block device's size too
            if self.probed and (found := probe_format(self.read(0, 1), str(path))) != "raw":
                raise DiskImageError(f"disk image '{path}' is a {found} image; kvmshim reads raw images only")
            if active:
                self.activate()
        except BaseException:
            os.close(self.fd)
            raise
        self.sectors = -(-size // SECTOR)

    def read(self, lba: int, count: int) -> bytes:
        """``count`` sectors from ``lba``; past the end of the file (a partial last sector), zeros."""
        return os.pread(self.fd, count * SECTOR, lba * SECTOR).ljust(count * SECTOR, b"\0")

    def activate(self) -> None:
        """Take the image's locks (ImageLockError if another user holds them); writes may follow."""
        if not self.active:
            lock_image(self.fd, self.path, write=not self.readonly)
            self.active = True

    def inactivate(self) -> None:
        """Flush and give the locks up, refusing writes from now on (a migration source's last step)."""
        if self.active:
            self.flush()
            unlock_image(self.fd, write=not self.readonly)
            self.active = False

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} is read-only")
        if not self.active:
            raise PermissionError(f"{self.path} is inactive: a migration has not handed it over")
        if self.probed and lba == 0 and (found := probe_format(bytes(data[:PROBE_SIZE]))) != "raw":
            raise PermissionError(f"{self.path}: writing sector 0 would make this probed raw image a {found}")
        view, offset = memoryview(data), lba * SECTOR
        while view:
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done

    def flush(self) -> None:
        if not self.readonly:
            os.fsync(self.fd)

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self.fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> DiskImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def guess_geometry(image: DiskImage) -> tuple[int, int, int, int]:
    """hd_geometry_guess: (cylinders, heads, sectors, BIOS translation) from the MBR's first
    usable partition entry (its end head/sector), else 16 heads and 63 sectors for the size."""
    mbr = image.read(0, 1)
    if mbr[510:512] == b"\x55\xaa":
        for entry in range(4):
            part = mbr[0x1BE + 16 * entry:0x1CE + 16 * entry]
            if int.from_bytes(part[12:16], "little") and part[5]:
                heads, sectors = part[5] + 1, part[6] & 63
                if not sectors or not 1 <= image.sectors // (heads * sectors) <= 16383:
                    continue
                if heads <= 16:
                    return image.sectors // (heads * sectors), heads, sectors, TRANSLATION_NONE
                cylinders = _chs_for_size(image.sectors)
                return cylinders, 16, 63, TRANSLATION_LARGE if cylinders * 16 <= 131072 else TRANSLATION_LBA
    cylinders = _chs_for_size(image.sectors)
    return cylinders, 16, 63, TRANSLATION_NONE if cylinders <= 1024 else TRANSLATION_LBA


def _chs_for_size(sectors: int) -> int:
    return min(max(sectors // (16 * 63), 2), 16383)


def _ata_string(text: str, length: int) -> bytes:
    """IDENTIFY strings: space padded, the two bytes of each word swapped."""
    raw = text.encode("ascii")[:length].ljust(length)
    return bytes(raw[i ^ 1] for i in range(length))


class AtaDisk:
    """What a drive is: its image, default CHS geometry, BIOS translation and identity strings."""

    def __init__(self, image: DiskImage, *, serial: str | None = None, model: str = DEFAULT_MODEL,
                 geometry: tuple[int, int, int] | None = None) -> None:
        self.image = image
        self.serial = serial
        self.model = model
        if geometry is None:
            *chs, self.translation = guess_geometry(image)
            self.cylinders, self.heads, self.sectors = chs
        else:
            self.cylinders, self.heads, self.sectors = geometry
            if not (1 <= self.cylinders <= 16383 and 1 <= self.heads <= 16 and 1 <= self.sectors <= 63):
                raise ValueError(f"disk {image.path}: geometry {geometry} outside 16383/16/63")
            self.translation = TRANSLATION_NONE if self.cylinders <= 1024 else TRANSLATION_LBA

    @property
    def total_sectors(self) -> int:
        return self.image.sectors


class AtaDevice:
    """One unit's task file and command engine (QEMU's IDEState); ``disk`` None for an empty unit."""

    #: QEMU's vmstate_ide_drive: the task file, the transfer in progress and its buffer (the disk's
    #: image is the host's: shared storage, as with QEMU).
    vmstate = VMStateDescription("ide_drive", fields=(
        "feature", "error", "nsector", "sector", "lcyl", "hcyl", "hob_feature", "hob_nsector", "hob_sector",
        "hob_lcyl", "hob_hcyl", "select", "status", "lba48", "mult_sectors", "req_nb_sectors", "write_cache",
        "identify_data", "chs_translation", "buffer", "pos", "end", "to_guest", "end_transfer"))
    #: What ``on_end`` may be after a migration (QEMU's end_transfer_fn_idx).
    END_TRANSFERS = ("transfer_stop", "sector_read", "sector_write")

    def __init__(self, bus: IdeBus, unit: int, disk: AtaDisk | None) -> None:
        self.bus, self.unit, self.disk = bus, unit, disk
        self.buffer = bytearray(MAX_MULT_SECTORS * SECTOR)
        # The data port's views of the buffer (x86 hosts: native order is the guest's little-endian).
        self.words = memoryview(self.buffer).cast("H")
        self.dwords = memoryview(self.buffer).cast("I")
        self.write_cache = True
        self.identify_data = self._identify(disk) if disk else b""
        if disk:
            self.cur_heads, self.cur_sectors = disk.heads, disk.sectors
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """ide_reset: registers, signature, no transfer (data port reads 0)."""
        self.feature = self.error = self.nsector = self.sector = self.lcyl = self.hcyl = 0
        self.hob_feature = self.hob_nsector = self.hob_sector = self.hob_lcyl = self.hob_hcyl = 0
        self.select = DEV_ALWAYS_ON
        self.status = DRDY | DSC
        self.lba48 = False
        self.mult_sectors = MAX_MULT_SECTORS
        self.req_nb_sectors = 0
        self.set_signature()
        self.transfer_stop()

    def set_signature(self) -> None:
        """The ATA signature (or 0xffff in the cylinder registers for an empty unit)."""
        self.select &= ~DEV_HS
        self.nsector = self.sector = 1
        self.lcyl = self.hcyl = 0 if self.disk else 0xFF

    def transfer_start(self, size: int, end: Callable[[], None], to_guest: bool) -> None:
        """Arm the data port for ``size`` bytes of the buffer; ``end`` runs when they have moved."""
        self.pos, self.end, self.on_end, self.to_guest = 0, size, end, to_guest
        if not self.status & ERR:
            self.status |= DRQ

    def transfer_stop(self) -> None:
        self.pos = self.end = 0
        self.on_end, self.to_guest = self.transfer_stop, True
        self.status &= ~DRQ

    # ---------------------------------------------------------------- migration
    @property
    def end_transfer(self) -> str:
        """The name of what runs when the transfer in progress ends."""
        return self.on_end.__name__

    @end_transfer.setter
    def end_transfer(self, name: str) -> None:
        if name not in self.END_TRANSFERS:
            raise ValueError(f"ide_drive: end of transfer {name!r} (one of {', '.join(self.END_TRANSFERS)})")
        self.on_end = getattr(self, name)

    @property
    def chs_translation(self) -> list[int]:
        """[heads, sectors] of the current CHS translation; [] for an empty unit."""
        return [self.cur_heads, self.cur_sectors] if self.disk else []

    @chs_translation.setter
    def chs_translation(self, value: list[int]) -> None:
        if len(value) != (2 if self.disk else 0) or not all(isinstance(v, int) and 0 < v < 256 for v in value):
            raise ValueError(f"ide_drive unit {self.unit}: a CHS translation {value!r} for "
                             f"{'an empty unit' if self.disk is None else 'a disk'}")
        if value:
            self.cur_heads, self.cur_sectors = value

    def post_load(self) -> None:
        if not 0 <= self.pos <= self.end <= len(self.buffer) or self.pos % 2:
            raise ValueError(f"ide_drive unit {self.unit}: transfer at {self.pos} of {self.end} "
                             f"(a {len(self.buffer)}-byte buffer)")
        if self.disk is None and self.on_end != self.transfer_stop:  # only a command to a disk starts one
            raise ValueError(f"ide_drive unit {self.unit}: no disk for a transfer ending in {self.end_transfer}")
        check_index("ide_drive multiple sectors", self.mult_sectors, MAX_MULT_SECTORS + 1)
        check_index("ide_drive sectors per block", self.req_nb_sectors, MAX_MULT_SECTORS + 1)

    def abort(self, error: int = ABRT) -> None:
        """ide_abort_command: end any transfer, report ``error``."""
        self.transfer_stop()
        self.status = DRDY | ERR
        self.error = error

    # ---------------------------------------------------------------- addressing
    def get_sector(self) -> int:
        """The address in the task file: LBA48, LBA28 or CHS (under the current translation)."""
        if self.select & DEV_LBA:
            low = self.hcyl << 16 | self.lcyl << 8 | self.sector
            if self.lba48:
                return self.hob_hcyl << 40 | self.hob_lcyl << 32 | self.hob_sector << 24 | low
            return (self.select & DEV_HS) << 24 | low
        heads, sectors = self.cur_heads, self.cur_sectors
        return ((self.hcyl << 8 | self.lcyl) * heads + (self.select & DEV_HS)) * sectors + self.sector - 1

    def set_sector(self, lba: int) -> None:
        if self.select & DEV_LBA:
            self.sector, self.lcyl, self.hcyl = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF
            if self.lba48:
                self.hob_sector, self.hob_lcyl, self.hob_hcyl = lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF
            else:
                self.select = self.select & ~DEV_HS | lba >> 24 & DEV_HS
            return
        cylinder, rest = divmod(lba, self.cur_heads * self.cur_sectors)
        self.hcyl, self.lcyl = cylinder >> 8 & 0xFF, cylinder & 0xFF
        self.select = self.select & ~DEV_HS | rest // self.cur_sectors & DEV_HS
        self.sector = rest % self.cur_sectors + 1

    def lba48_transform(self, lba48: bool) -> None:
        """ide_cmd_lba48_transform: a count of 0 means 256 (65536 with LBA48)."""
        self.lba48 = lba48
        if not lba48:
            self.nsector = self.nsector or 256
        else:
            self.nsector = self.hob_nsector << 8 | self.nsector or 65536

    @property
    def attached(self) -> AtaDisk:
        """The disk of a unit that has one: what every command that checked ``_needs_disk``, and
        every sector transfer (only such a command starts one; ``post_load`` checks), works on."""
        assert self.disk is not None, f"ide unit {self.unit} has no disk"
        return self.disk

    def range_ok(self, lba: int, count: int) -> bool:
        return 0 <= lba and count <= self.attached.total_sectors - lba

    # ---------------------------------------------------------------- reads and writes
    def sector_read(self) -> None:
        """ide_sector_read: the next block (up to ``req_nb_sectors``) into the buffer, then DRQ."""
        self.status, self.error = DRDY | DSC, 0
        count = min(self.nsector, self.req_nb_sectors)
        if not count:
            self.transfer_stop()
            return
        lba = self.get_sector()
        if not self.range_ok(lba, count):
            self.fail(IDNF)
            return
        try:
            self.buffer[:count * SECTOR] = self.attached.image.read(lba, count)
        except OSError:
            self.fail(ABRT)
            return
        self.set_sector(lba + count)
        self.nsector -= count
        self.transfer_start(count * SECTOR, self.sector_read, True)
        self.bus.raise_irq()

    def sector_write(self) -> None:
        """ide_sector_write: a whole block has arrived; it goes to the image, then DRQ for the next."""
        self.status = DRDY | DSC
        count = min(self.nsector, self.req_nb_sectors)
        lba = self.get_sector()
        if not self.range_ok(lba, count):
            self.fail(IDNF)
            return
        try:
            self.attached.image.write(lba, self.buffer[:count * SECTOR])
            if not self.write_cache:
                self.attached.image.flush()
        except OSError:
            self.fail(ABRT)
            return
        self.nsector -= count
        self.set_sector(lba + count)
        if self.nsector:
            self.transfer_start(min(self.nsector, self.req_nb_sectors) * SECTOR, self.sector_write, False)
        else:
            self.transfer_stop()
        self.bus.raise_irq()

    def fail(self, error: int) -> None:
        """ide_rw_error: abort with ``error`` and interrupt."""
        self.abort(error)
        self.bus.raise_irq()

    # ---------------------------------------------------------------- commands
    def execute(self, command: int) -> None:
        """ide_exec_cmd for this (selected) unit."""
        if self.status & (BSY | DRQ):
            return  # only ATAPI's DEVICE RESET may interrupt a transfer
        handler = COMMANDS.get(command)
        if handler is None:
            self.abort()
            self.bus.raise_irq()
            return
        method, set_dsc = handler
        self.status, self.error = DRDY | BSY, 0
        if method(self, command):
            self.status &= ~BSY
            if set_dsc and not self.error:
                self.status |= DSC
            self.bus.raise_irq()

    def _needs_disk(self) -> bool:
        if self.disk is None:
            self.abort()
            return False
        return True

    def cmd_nop(self, command: int) -> bool:
        return True

    def cmd_identify(self, command: int) -> bool:
        if not self._needs_disk():
            return True
        self.buffer[:SECTOR] = self.identify_data
        self.status = DRDY | DSC
        self.transfer_start(SECTOR, self.transfer_stop, True)
        self.bus.raise_irq()
        return False

    def cmd_read(self, command: int) -> bool:
        if not self._needs_disk():
            return True
        multiple = command in (READ_MULTIPLE, READ_MULTIPLE_EXT)
        if multiple and not self.mult_sectors:
            self.abort()
            return True
        self.lba48_transform(command in (READ_EXT, READ_MULTIPLE_EXT))
        self.req_nb_sectors = self.mult_sectors if multiple else 1
        self.sector_read()
        return False

    def cmd_write(self, command: int) -> bool:
        if not self._needs_disk():
            return True
        multiple = command in (WRITE_MULTIPLE, WRITE_MULTIPLE_EXT)
        if multiple and not self.mult_sectors or self.attached.image.readonly:
            self.abort()
            return True
        self.lba48_transform(command in (WRITE_EXT, WRITE_MULTIPLE_EXT))
        self.req_nb_sectors = self.mult_sectors if multiple else 1
        self.status = DRDY | DSC
        self.transfer_start(min(self.nsector, self.req_nb_sectors) * SECTOR, self.sector_write, False)
        return False

    def cmd_verify(self, command: int) -> bool:
        if self._needs_disk():
            self.lba48_transform(command == VERIFY_EXT)
            if not self.range_ok(self.get_sector(), self.nsector):
                self.abort(IDNF)
        return True

    def cmd_set_multiple(self, command: int) -> bool:
        count = self.nsector & 0xFF
        if count and (count > MAX_MULT_SECTORS or count & (count - 1)):
            self.abort()
        else:
            self.mult_sectors = count
        return True

    def cmd_initialize_parameters(self, command: int) -> bool:
        """INITIALIZE DEVICE PARAMETERS: the CHS translation (sectors per track, heads) later CHS commands use."""
        if self._needs_disk():
            if not 1 <= self.nsector <= 63:
                self.abort()
            else:
                self.cur_heads, self.cur_sectors = (self.select & DEV_HS) + 1, self.nsector
        return True

    def cmd_read_native_max(self, command: int) -> bool:
        if self._needs_disk():
            self.lba48_transform(command == READ_NATIVE_MAX_EXT)
            self.set_sector(self.attached.total_sectors - 1)
        return True

    def cmd_check_power_mode(self, command: int) -> bool:
        self.nsector = 0xFF  # active or idle
        return True

    def cmd_freeze_lock(self, command: int) -> bool:
        self.nsector = 0
        return True

    def cmd_flush(self, command: int) -> bool:
        if self.disk is not None:
            try:
                self.disk.image.flush()
            except OSError:
                self.abort()
                return True
        self.status = DRDY | DSC
        return True

    def cmd_diagnose(self, command: int) -> bool:
        """EXECUTE DEVICE DIAGNOSTIC: signature, and error 0x01 ("device 0 passed") without ERR."""
        self.set_signature()
        self.status, self.error = DRDY | DSC, 0x01
        self.bus.raise_irq()
        return False

    def cmd_set_features(self, command: int) -> bool:
        if not self._needs_disk():
            return True
        feature = self.feature
        if feature in (0x02, 0x82):  # write cache on / off (off flushes)
            self.write_cache = feature == 0x02
            self.identify_data = self._identify(self.attached)
            return self.cmd_flush(command) if feature == 0x82 else True
        if feature == 0x03:  # transfer mode: PIO only
            if self.nsector >> 3 not in (0, 1):
                self.abort()
            return True
        if feature not in (0xCC, 0x66, 0xAA, 0x55, 0x05, 0x85, 0x69, 0x67, 0x96, 0x9A, 0x42, 0xC2):
            self.abort()
        return True

    # ---------------------------------------------------------------- IDENTIFY
    def _identify(self, disk: AtaDisk) -> bytes:
        """ide_identify's words, minus DMA, SMART and TRIM, which this device does not do."""
        words = [0] * 256
        chs = disk.cylinders * disk.heads * disk.sectors
        total, lba28 = disk.total_sectors, min(disk.total_sectors, (1 << 28) - 1)
        for index, value in {
            0: 0x0040, 1: disk.cylinders, 3: disk.heads, 4: SECTOR * disk.sectors, 5: SECTOR, 6: disk.sectors,
            20: 3, 21: 512, 22: 4, 47: 0x8000 | MAX_MULT_SECTORS, 48: 1,
            49: 1 << 11 | 1 << 9,  # IORDY, LBA
            51: 0x200, 52: 0x200, 53: 1 | 1 << 1,  # words 54-58 and 64-70 valid
            54: disk.cylinders, 55: disk.heads, 56: disk.sectors, 57: chs & 0xFFFF, 58: chs >> 16,
            59: 0x100 | MAX_MULT_SECTORS, 60: lba28 & 0xFFFF, 61: lba28 >> 16,
            64: 0x03, 65: 120, 66: 120, 67: 120, 68: 120,
            80: 0xF0, 81: 0x16,
            82: 1 << 14 | 1 << 5,  # NOP, write cache
            83: 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10,  # FLUSH CACHE EXT, FLUSH CACHE, LBA48
            84: 1 << 14,
            85: 1 << 14 | (1 << 5 if self.write_cache else 0),
            86: 1 << 13 | 1 << 12 | 1 << 10, 87: 1 << 14,
            93: 1 | 1 << 14 | 0x2000,
            100: total & 0xFFFF, 101: total >> 16 & 0xFFFF, 102: total >> 32 & 0xFFFF, 103: total >> 48 & 0xFFFF,
            106: 0x6000,  # one logical sector per physical sector
        }.items():
            words[index] = value
        data = bytearray(b"".join(w.to_bytes(2, "little") for w in words))
        serial = disk.serial or f"QM{self.bus.index * 2 + self.unit + 1:05d}"
        data[20:40] = _ata_string(serial, 20)
        data[46:54] = _ata_string(HW_VERSION, 8)
        data[54:94] = _ata_string(disk.model, 40)
        return bytes(data)


_C = AtaDevice
#: ide_cmd_table for hard disks: opcode -> (handler, set DSC on success).
COMMANDS: dict[int, tuple[Callable[[AtaDevice, int], bool], bool]] = {
    RECALIBRATE: (_C.cmd_nop, True), SEEK: (_C.cmd_nop, True), DIAGNOSE: (_C.cmd_diagnose, False),
    INITIALIZE_PARAMETERS: (_C.cmd_initialize_parameters, True),
    **dict.fromkeys((READ, READ_RETRY, READ_EXT, READ_MULTIPLE, READ_MULTIPLE_EXT), (_C.cmd_read, False)),
    **dict.fromkeys((WRITE, WRITE_RETRY, WRITE_EXT, WRITE_VERIFY, WRITE_MULTIPLE, WRITE_MULTIPLE_EXT),
                    (_C.cmd_write, False)),
    **dict.fromkeys((VERIFY, VERIFY_RETRY, VERIFY_EXT), (_C.cmd_verify, True)),
    **dict.fromkeys((READ_NATIVE_MAX, READ_NATIVE_MAX_EXT), (_C.cmd_read_native_max, True)),
    **dict.fromkeys((CHECK_POWER_MODE, CHECK_POWER_MODE_OLD), (_C.cmd_check_power_mode, True)),
    **dict.fromkeys(POWER_COMMANDS, (_C.cmd_nop, False)),
    SET_MULTIPLE: (_C.cmd_set_multiple, True), FLUSH_CACHE: (_C.cmd_flush, False),
    FLUSH_CACHE_EXT: (_C.cmd_flush, False), IDENTIFY: (_C.cmd_identify, False),
    SET_FEATURES: (_C.cmd_set_features, True), SECURITY_FREEZE_LOCK: (_C.cmd_freeze_lock, True),
}
del _C


class IdeBus:
    """One channel: units 0 and 1, the command block (8 ports) and the control block (1 port).

    ``set_irq(level)`` drives the channel's ISA line (14 or 15); it is called on changes only.
    ``index`` (0 primary, 1 secondary) names the default serial numbers as QEMU counts them.
    There is no lock on the data path (a sector is 256 exits): a guest serialises its disk
    accesses, and two racing vCPUs can only confuse the channel, every transfer staying
    within its buffer and every write within the image.
    """

    vmstate = VMStateDescription("ide_bus", fields=("cmd", "irq_level", "units", "active_unit"))

    def __init__(self, index: int, disks: tuple[AtaDisk | None, AtaDisk | None] = (None, None),
                 set_irq: Callable[[int], None] | None = None) -> None:
        self.index = index
        self.set_irq = set_irq
        self.irq_level = 0
        self.cmd = 0
        self.units = (AtaDevice(self, 0, disks[0]), AtaDevice(self, 1, disks[1]))
        self.active = self.units[0]
        self.has_disk = any(disks)
        rules = AccessRules(1, 4, unaligned=True)
        self.command_block = port_region("ide", 8, self._read, self._write, valid=rules, impl=rules)
        self.control_block = port_region("ide", 1, self._ctrl_read, self._ctrl_write)

    def map(self, io: MemoryRegion, command_base: int, control_base: int) -> None:
        io.add_subregion(command_base, self.command_block)
        io.add_subregion(control_base, self.control_block)

    @property
    def active_unit(self) -> int:
        """Which unit the device register selected (QEMU's bus->unit)."""
        return self.active.unit

    @active_unit.setter
    def active_unit(self, unit: int) -> None:
        check_index("ide_bus unit", unit, 2)
        self.active = self.units[unit]

    def post_load(self) -> None:
        """Drive the channel's line to the level loaded."""
        if self.irq_level and self.set_irq is not None:
            self.set_irq(1)

    # ---------------------------------------------------------------- interrupt line
    def raise_irq(self) -> None:
        if not self.cmd & CTRL_NIEN and not self.irq_level:
            self.irq_level = 1
            if self.set_irq is not None:
                self.set_irq(1)

    def lower_irq(self) -> None:
        if self.irq_level:
            self.irq_level = 0
            if self.set_irq is not None:
                self.set_irq(0)

    # ---------------------------------------------------------------- data port
    def _data_in(self, size: int) -> int:
        unit = self.active
        pos = unit.pos
        end = pos + size
        if not unit.status & DRQ or not unit.to_guest or end > unit.end:
            return 0
        unit.pos = end
        if size == 2:
            value = unit.words[pos >> 1]
        else:
            value = unit.dwords[pos >> 2] if not pos & 3 else int.from_bytes(unit.buffer[pos:end], "little")
        if end == unit.end:
            unit.status &= ~DRQ
            unit.on_end()
        return value

    def _data_out(self, value: int, size: int) -> None:
        unit = self.active
        pos = unit.pos
        end = pos + size
        if not unit.status & DRQ or unit.to_guest or end > unit.end:
            return
        if size == 2:
            unit.words[pos >> 1] = value
        elif not pos & 3:
            unit.dwords[pos >> 2] = value
        else:
            unit.buffer[pos:end] = value.to_bytes(size, "little")
        unit.pos = end
        if end == unit.end:
            unit.status &= ~DRQ
            unit.on_end()

    # ---------------------------------------------------------------- command block
    def _read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        """QEMU's portio list: 16/32-bit data at 0, bytes elsewhere; a 16-bit access elsewhere is two bytes."""
        if offset == DATA and size > 1:
            return self._data_in(size)
        if size == 1:
            return self._register(offset)
        if size == 2:
            high = self._register(offset + 1) if offset < 7 else 0xFF
            return self._register(offset) | high << 8
        return 0xFFFFFFFF

    def _write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        if offset == DATA and size > 1:
            self._data_out(value, size)
        elif size == 1:
            self._set_register(offset, value)
        elif size == 2:
            self._set_register(offset, value & 0xFF)
            if offset < 7:
                self._set_register(offset + 1, value >> 8)

    def _register(self, reg: int) -> int:
        """ide_ioport_read (byte registers; a byte read of the data port gives 0xff)."""
        unit = self.active
        absent = unit.disk is None and unit.unit == 1
        hob = self.cmd & CTRL_HOB
        if reg == DATA:
            return 0xFF
        if reg == STATUS_COMMAND:
            self.lower_irq()
            return 0 if not self.has_disk or absent else unit.status
        if not self.has_disk:
            return 0
        if reg == ERROR_FEATURE:
            return 0 if absent else unit.hob_feature if hob else unit.error
        if reg == SECTOR_COUNT:
            return unit.hob_nsector if hob else unit.nsector & 0xFF
        if reg == LBA_LOW:
            return unit.hob_sector if hob else unit.sector
        if reg == LBA_MID:
            return unit.hob_lcyl if hob else unit.lcyl
        if reg == LBA_HIGH:
            return unit.hob_hcyl if hob else unit.hcyl
        return unit.select

    def _set_register(self, reg: int, value: int) -> None:
        """ide_ioport_write: both units latch the task file; writes while BSY/DRQ are ignored."""
        if reg == DATA:
            return
        self.cmd &= ~CTRL_HOB
        if reg == STATUS_COMMAND:
            self.lower_irq()
            if self.active.disk is None and self.active.unit == 1:
                return  # commands to an absent slave go nowhere
            self.active.execute(value)
            return
        if self.active.status & (BSY | DRQ):
            return
        for unit in self.units:
            if reg == ERROR_FEATURE:
                unit.hob_feature, unit.feature = unit.feature, value
            elif reg == SECTOR_COUNT:
                unit.hob_nsector, unit.nsector = unit.nsector & 0xFF, value
            elif reg == LBA_LOW:
                unit.hob_sector, unit.sector = unit.sector, value
            elif reg == LBA_MID:
                unit.hob_lcyl, unit.lcyl = unit.lcyl, value
            elif reg == LBA_HIGH:
                unit.hob_hcyl, unit.hcyl = unit.hcyl, value
            else:
                unit.select = value | DEV_ALWAYS_ON
        if reg == DEVICE:
            self.active = self.units[1 if value & DEV_SELECT else 0]

    # ---------------------------------------------------------------- control block
    def _ctrl_read(self, mr: MemoryRegion, offset: int, size: int) -> int:
        """Alternate status: the status without acknowledging the interrupt."""
        unit = self.active
        return 0 if not self.has_disk or unit.disk is None and unit.unit == 1 else unit.status

    def _ctrl_write(self, mr: MemoryRegion, offset: int, value: int, size: int) -> None:
        """Device control: nIEN, HOB, and SRST, whose rising edge resets both units at once."""
        rising = value & CTRL_SRST and not self.cmd & CTRL_SRST
        self.cmd = value
        if rising:
            for unit in self.units:
                unit.reset()
                unit.cmd_diagnose(DIAGNOSE)
            self.cmd &= ~CTRL_SRST
