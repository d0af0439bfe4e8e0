"""A GRUB 2 disk image built at test time from Debian's grub-pc-bin: no root, no loop devices.

grub-mkstandalone makes a core.img whose memdisk holds grub.cfg and the modules; the disk
is boot.img in sector 0 and core.img from sector 1, zero-filled to 8 MiB. boot.img's
kernel sector (0x5c) already says 1 and core.img's first sector (diskboot) lists the rest
from sector 2, so the only field grub-bios-setup would touch is the boot-drive check at
0x66, which it turns into NOPs for hard disks. grub.cfg puts GRUB on COM1 (115200 8N1) and
waits at its menu for a key: ``c`` gives the ``grub>`` prompt.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

GRUB_DIR = Path("/usr/lib/grub/i386-pc")
SECTOR = 512
IMAGE_SIZE = 8 << 20
KERNEL_SECTOR, DRIVE_CHECK = 0x5C, 0x66
DRIVE_CHECK_JMP, NOPS = b"\xeb\x05", b"\x90\x90"
#: diskboot.img's blocklist entry (start sector, 8 bytes) sits 12 bytes before its end.
BLOCKLIST_START = SECTOR - 12
MENU_ENTRY = "kvmshim test entry"
#: What GRUB prints last when its menu is up (the help line under the entries).
MENU_READY = b"command-line"
PROMPT = b"grub>"
GRUB_CFG = f"""serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=-1
menuentry "{MENU_ENTRY}" {{
    echo "entry selected"
}}
"""
MODULES = "normal serial echo biosdisk part_msdos"
INSTALL_MODULES = MODULES + " ls"


def build_grub_image(workdir: Path) -> Path:
    """``workdir``/grub.img, built from the installed grub-pc-bin."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg, core_path, image = workdir / "grub.cfg", workdir / "core.img", workdir / "grub.img"
    cfg.write_text(GRUB_CFG)
    subprocess.run(["grub-mkstandalone", "-O", "i386-pc", "-o", str(core_path), f"--modules={MODULES}",
                    f"--install-modules={INSTALL_MODULES}", "--fonts=", "--locales=", "--themes=",
                    f"boot/grub/grub.cfg={cfg}"], check=True, capture_output=True, cwd=workdir)
    boot = bytearray((GRUB_DIR / "boot.img").read_bytes())
    core = core_path.read_bytes()
    if len(boot) != SECTOR or boot[KERNEL_SECTOR:KERNEL_SECTOR + 8] != (1).to_bytes(8, "little"):
        raise RuntimeError(f"{GRUB_DIR}/boot.img does not load its core from sector 1")
    if core[BLOCKLIST_START:BLOCKLIST_START + 8] != (2).to_bytes(8, "little"):
        raise RuntimeError("core.img's diskboot does not read the rest of the core from sector 2")
    if boot[DRIVE_CHECK:DRIVE_CHECK + 2] == DRIVE_CHECK_JMP:
        boot[DRIVE_CHECK:DRIVE_CHECK + 2] = NOPS
    disk = bytes(boot) + core
    if len(disk) > IMAGE_SIZE:
        raise RuntimeError(f"GRUB needs {len(disk)} bytes, more than the {IMAGE_SIZE}-byte image")
    image.write_bytes(disk + bytes(IMAGE_SIZE - len(disk)))
    return image


@pytest.fixture(scope="session")
def grub_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image, built once per session (a cached copy in the session's base temp directory)."""
    if shutil.which("grub-mkstandalone") is None or not (GRUB_DIR / "boot.img").exists():
        pytest.fail("grub-pc-bin is not installed (apt-get install grub-pc-bin)")
    image = tmp_path_factory.getbasetemp() / "grub" / "grub.img"
    return image if image.exists() else build_grub_image(image.parent)
