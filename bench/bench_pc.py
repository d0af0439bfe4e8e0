"""The pc machine against QEMU 7.2 + KVM: SeaBIOS to "No bootable device", GRUB to `grub>`.

Both run as processes with the same QEMU command line (`kvmshim qemu` takes QEMU's): SeaBIOS
logs to a debug console at 0x402 into a file, GRUB talks on the serial port (stdio). Each run
is timed from the process's start to the text appearing, then the process is killed; runs are
interleaved (QEMU, kvmshim, QEMU, ...), medians of REPEATS. The GRUB image is the tests' (built
from Debian's grub-pc-bin by tests/grub_image.py). Figures and ratios only; bench/build/pc.png.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
sys.path.insert(0, str(HERE.parent / "tests"))
REPEATS = 3
QEMU = shutil.which("qemu-system-x86_64")
KVMSHIM_QEMU = str(Path(sys.executable).with_name("kvmshim-qemu"))
TIMEOUT = 300.0


def time_until(argv: list[str], text: bytes, log: Path | None = None, keys: tuple[bytes, bytes] = (b"", b"")) -> float:
    """Seconds from starting ``argv`` until ``text`` shows in ``log`` (or stdout); ``keys`` is
    (after this, type that) on stdin first, as GRUB's menu needs."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen, typed = bytearray(), not keys[0]
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        while time.monotonic() - start < TIMEOUT:
            chunk = proc.stdout.read() or b""
            seen += chunk
            if not typed and keys[0] in seen:
                proc.stdin.write(keys[1])
                proc.stdin.flush()
                typed = True
                seen.clear()
            if typed and text in (log.read_bytes() if log is not None and log.exists() else seen):
                return time.monotonic() - start
            time.sleep(0.01)
        raise TimeoutError(f"{argv[0]}: no {text!r} after {TIMEOUT} s")
    finally:
        proc.kill()
        proc.wait()


def seabios(binary: str, log: Path) -> float:
    log.unlink(missing_ok=True)
    return time_until([binary, "-accel", "kvm", "-M", "pc", "-m", "128", "-nodefaults", "-display", "none",
                       "-chardev", f"file,id=seabios,path={log}", "-device",
                       "isa-debugcon,iobase=0x402,chardev=seabios"], b"No bootable device", log)


def grub(binary: str, image: Path) -> float:
    from grub_image import MENU_READY, PROMPT

    return time_until([binary, "-accel", "kvm", "-M", "pc", "-m", "128", "-nodefaults", "-display", "none",
                       "-serial", "stdio", "-drive", f"file={image},format=raw,if=ide", "-boot", "c"], PROMPT,
                      keys=(MENU_READY, b"c"))


def measure() -> dict[str, dict[str, float]]:
    from grub_image import build_grub_image

    systems = {"kvmshim": KVMSHIM_QEMU, **({"QEMU": QEMU} if QEMU else {})}
    with tempfile.TemporaryDirectory() as tmp:
        image = build_grub_image(Path(tmp) / "grub")
        log = Path(tmp) / "seabios.log"
        runs = {"SeaBIOS to 'No bootable device'": lambda b: seabios(b, log),
                "GRUB to 'grub>'": lambda b: grub(b, image)}
        results: dict[str, dict[str, float]] = {}
        for name, run in runs.items():
            samples: dict[str, list[float]] = {}
            for _ in range(REPEATS):
                for system, binary in reversed(list(systems.items())):
                    samples.setdefault(system, []).append(run(binary))
            results[name] = {system: statistics.median(values) for system, values in samples.items()}
    return results


def main() -> None:
    print(f"pc machine boots, same QEMU command line, medians of {REPEATS}, interleaved")
    results = measure()
    for name, by_system in results.items():
        line = "   ".join(f"{system} {seconds:6.2f} s" for system, seconds in by_system.items())
        ratio = f"   kvmshim/QEMU time {by_system['kvmshim'] / by_system['QEMU']:.2f}x" if "QEMU" in by_system else ""
        print(f"  {name:32} {line}{ratio}")
    try:
        from kvmshim.plots import bar_chart

        systems = list(next(iter(results.values())))
        BUILD.mkdir(exist_ok=True)
        bar_chart(BUILD / "pc.png", list(results), {s: [results[n][s] for n in results] for s in systems},
                  bar_unit="seconds", x_label="boot", title="The pc machine: kvmshim and QEMU 7.2 + KVM")
        print(f"  figure: {BUILD / 'pc.png'}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
