"""The GRUB image tests/grub_image.py builds (test_pc_qemu.py boots it through `kvmshim qemu`)."""
from __future__ import annotations

from grub_image import DRIVE_CHECK, IMAGE_SIZE, NOPS, SECTOR, grub_image  # noqa: F401


def test_image_layout(grub_image):
    data = grub_image.read_bytes()
    assert len(data) == IMAGE_SIZE
    assert data[510:512] == b"\x55\xaa" and data[DRIVE_CHECK:DRIVE_CHECK + 2] == NOPS
    assert int.from_bytes(data[0x5C:0x64], "little") == 1  # boot.img loads its core from sector 1
    blocks = int.from_bytes(data[2 * SECTOR - 4:2 * SECTOR - 2], "little")  # diskboot's blocklist length
    assert 0 < blocks < 1000 and not any(data[(2 + blocks) * SECTOR:])
