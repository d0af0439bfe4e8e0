"""docs/reliability.md and the reliability tests stay in step: every test the table names exists,
every test of the reliability modules is named, and every CLI case has its row."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from test_hostile_input import CASES

TESTS = Path(__file__).parent
DOC = (TESTS.parent / "docs" / "reliability.md").read_text()
MODULES = ("test_topology_stress", "test_concurrency", "test_guest_faults", "test_resources",
           "test_hostile_memapi", "test_hostile_input")
REFERENCE = re.compile(r"`tests/(test_\w+)\.py::(\w+)(?:\[\w+\])?`")


def named_tests(module: str) -> set[str]:
    """Test functions of a module, and test classes bound to a test_ name (a state machine's TestCase)."""
    tree = ast.parse((TESTS / f"{module}.py").read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    names |= {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
              if isinstance(target, ast.Name)}
    return {name for name in names if name.startswith("test_")}


def test_every_test_the_doc_names_exists():
    references = REFERENCE.findall(DOC)
    assert len(references) > 20
    for module, name in references:
        assert name in named_tests(module), f"docs/reliability.md names tests/{module}.py::{name}, which does not exist"


def test_every_reliability_test_is_in_the_doc():
    named = set(REFERENCE.findall(DOC))
    for module in MODULES:
        for name in named_tests(module):
            assert (module, name) in named, f"tests/{module}.py::{name} has no row in docs/reliability.md"


def test_every_cli_case_has_a_row():
    table = DOC[DOC.index("| CASE |"):]
    rows = [line.split("|")[1].strip() for line in table[:table.index("\n\n")].splitlines()[2:]]
    assert rows == list(CASES)
