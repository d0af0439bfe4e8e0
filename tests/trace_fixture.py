"""Fixture ``traced``: run a scenario of tests/data/trace_scenarios under the tracer.

``traced("bar_move")`` runs ``python bar_move.py REPORT.json`` in a child process through
the plugin's ``kvm_trace`` fixture and returns a ScenarioTrace: the decoded events, the same
split into phases at the scenario's ``mark()`` calls, and what the scenario ``report()``-ed.
Import the fixture into a test module with ``from trace_fixture import traced``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvmshim.trace import IoctlEvent

SCENARIOS = Path(__file__).parent / "data" / "trace_scenarios"
TIMEOUT = 60.0


def _mark_cap() -> int:
    spec = importlib.util.spec_from_file_location("trace_scenario_helpers", SCENARIOS / "_scenario.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MARK_CAP


MARK_CAP = _mark_cap()


def is_mark(event: IoctlEvent) -> bool:
    return event.request == "KVM_CHECK_EXTENSION" and event.arg == MARK_CAP


@dataclass
class ScenarioTrace:
    events: list[IoctlEvent]
    phases: list[list[IoctlEvent]]  # events between mark() calls, the marks left out
    report: dict[str, Any]

    def slots(self, phase: int) -> list[tuple[int, int, int, str]]:
        """(slot, guest_phys_addr, memory_size, flags) of the phase's KVM_SET_USER_MEMORY_REGION calls."""
        return [(e.arg["slot"], e.arg["guest_phys_addr"], e.arg["memory_size"], e.arg["flags"])
                for e in self.phases[phase] if e.request == "KVM_SET_USER_MEMORY_REGION"]

    def requests(self, phase: int, *names: str) -> list[str]:
        """The request names of the phase (only *names* if given)."""
        return [e.request for e in self.phases[phase] if not names or e.request in names]


def split_scenario(events: list[IoctlEvent], report_path: Path) -> ScenarioTrace:
    """The events of a scenario that exited with 0, split at its marks, and its report."""
    phases: list[list[IoctlEvent]] = [[]]
    for event in events:
        if is_mark(event):
            phases.append([])
        else:
            phases[-1].append(event)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return ScenarioTrace(events, phases, report)


@pytest.fixture
def traced(tmp_path, kvm_trace) -> Callable[..., ScenarioTrace]:
    """``traced(name, *args)`` -> ScenarioTrace of tests/data/trace_scenarios/NAME.py (the test fails
    unless the scenario exits with 0 within TIMEOUT)."""

    def run(name: str, *args: str) -> ScenarioTrace:
        report_path = tmp_path / f"{name}.json"
        events = kvm_trace([sys.executable, str(SCENARIOS / f"{name}.py"), str(report_path), *args], timeout=TIMEOUT)
        return split_scenario(events, report_path)

    return run
