"""`kvmshim trace` end to end: text, JSON and summary output, exit status, timeout."""
from __future__ import annotations

import json
import re
import sys

import pytest

from kvmshim.cli import main
from kvmshim.trace import IoctlEvent, trace
from trace_fixture import SCENARIOS

HELLO = [sys.executable, "-m", "kvmshim.cli", "run", "hello"]
LINE = re.compile(r"ioctl\(\d+<(kvm|vm|vcpu\d+)>, [A-Z_0-9]+, .*\) = (\d+(<vm>|<vcpu\d+>)?|-1 E[A-Z]+ \(.*\))"
                  r"( \(KVM_EXIT_[A-Z_]+( \{.*\})?\))?")


def _trace_cli(tmp_path, *options: str, command=HELLO) -> tuple[int, list[str]]:
    out = tmp_path / "trace.out"
    status = main(["trace", *options, "-o", str(out), "--", *command])
    return status, out.read_text().splitlines()


@pytest.mark.kvm
def test_text_lines_of_a_hello_boot(tmp_path):
    status, lines = _trace_cli(tmp_path)
    assert status == 0
    assert all(LINE.fullmatch(line) for line in lines), [line for line in lines if not LINE.fullmatch(line)]
    assert re.fullmatch(r"ioctl\(\d+<kvm>, KVM_CREATE_VM, 0\) = \d+<vm>", lines[1])
    assert any(re.fullmatch(r"ioctl\(\d+<vm>, KVM_CREATE_VCPU, 0\) = \d+<vcpu0>", line) for line in lines)
    runs = [line for line in lines if ", KVM_RUN, " in line]
    assert runs[0].endswith(", KVM_RUN, 0) = 0 (KVM_EXIT_IO {direction=IN, port=0x3fd, size=1, count=1})")
    assert runs[1].endswith(", KVM_RUN, 0) = 0 (KVM_EXIT_IO {direction=OUT, port=0x3f8, size=1, count=1, "
                            "data=[0x48]})")
    assert runs[-1].endswith("(KVM_EXIT_IO {direction=OUT, port=0x501, size=1, count=1, data=[0x0]})")


@pytest.mark.kvm
def test_json_lines_and_summary_agree(tmp_path):
    status, lines = _trace_cli(tmp_path, "--json")
    events = [IoctlEvent.from_json(line) for line in lines]
    assert status == 0 and events[1].request == "KVM_CREATE_VM" and events[1].kind == "kvm"
    runs = [e for e in events if e.request == "KVM_RUN"]
    status, (line,) = _trace_cli(tmp_path, "--json", "--summary")
    summary = json.loads(line)["summary"]
    assert summary["exits"] == {"IO": len(runs)} and summary["calls"]["KVM_RUN"] == len(runs)
    assert summary["calls"]["KVM_CREATE_VM"] == 1 and summary["errors"] == {}
    # the slots as the guest ran with them, not after the machine deleted them at close
    first = summary["memslots"]["0"][0]
    assert (first["guest_phys_addr"], first["flags"]) == (0, "0")


@pytest.mark.kvm
def test_summary_shows_the_slots_left_at_exit(tmp_path):
    report = tmp_path / "report.json"
    status, lines = _trace_cli(tmp_path, "--summary",
                               command=[sys.executable, str(SCENARIOS / "overlay.py"), str(report)])
    assert status == 0
    table = lines[lines.index("memslots of vm 0:") + 1:]
    assert table[0].split() == ["as", "slot", "guest_phys_addr", "memory_size", "userspace_addr", "flags"]
    assert [row.split()[:4] + row.split()[5:] for row in table[1:]] == [
        ["0", "0", "0x0", "0xa0000", "0"], ["0", "1", "0xfffc0000", "0x40000", "READONLY"],
        ["0", "2", "0xc0000", "0x1ff40000", "0"]]
    assert any(re.fullmatch(r" +5 +0  KVM_SET_USER_MEMORY_REGION", row) for row in lines)


@pytest.mark.parametrize("code, status", [("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 9)", 137)])
def test_exit_status_is_the_commands(tmp_path, code, status):
    assert _trace_cli(tmp_path, command=[sys.executable, "-c", code]) == (status, [])


def test_timeout_kills_the_command():
    result = trace([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert result.timed_out and result.returncode == 128 + 9 and result.events == []
