"""The GRUB image tests/grub_image.py builds, and the pc machine booting it to ``grub>`` on real KVM:
SeaBIOS reads GRUB through int 13h from our IDE disk, GRUB talks to our 16550 directly."""
from __future__ import annotations

import hashlib

from grub_image import DRIVE_CHECK, IMAGE_SIZE, MENU_READY, NOPS, PROMPT, SECTOR, grub_image  # noqa: F401
from kvm_helpers import requires_kvm
from kvmshim.console import ScriptedInput


def test_image_layout(grub_image):  # noqa: F811
    data = grub_image.read_bytes()
    assert len(data) == IMAGE_SIZE
    assert data[510:512] == b"\x55\xaa" and data[DRIVE_CHECK:DRIVE_CHECK + 2] == NOPS
    assert int.from_bytes(data[0x5C:0x64], "little") == 1  # boot.img loads its core from sector 1
    blocks = int.from_bytes(data[2 * SECTOR - 4:2 * SECTOR - 2], "little")  # diskboot's blocklist length
    assert 0 < blocks < 1000 and not any(data[(2 + blocks) * SECTOR:])


@requires_kvm
def test_pc_boots_grub_to_its_prompt(grub_image):  # noqa: F811
    from pc_wiring import boot_pc

    digest = hashlib.sha256(grub_image.read_bytes()).hexdigest()
    script = ScriptedInput([(MENU_READY, b"c"), (PROMPT, b"")])
    machine, devices = boot_pc([grub_image], script, timeout=300)
    assert script.done.is_set(), bytes(script.output[-300:])
    output = bytes(script.output)
    assert b"GNU GRUB  version 2.06" in output and b"kvmshim test entry" in output
    assert output.rstrip().endswith(PROMPT)
    assert b"Booting from Hard Disk" in machine.log
    assert devices.uart.lcr == 0x03 and devices.uart.divisor == 1  # GRUB's 115200 8N1
    assert hashlib.sha256(grub_image.read_bytes()).hexdigest() == digest
