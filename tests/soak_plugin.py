"""pytest plugin: ``--soak`` (or ``KVMSHIM_SOAK=1``) runs the reliability tests at full length.

The default run keeps them short but still exercises every case; the ``soak`` fixture says which.
"""
from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true",
                     help="run the reliability tests at full length (also KVMSHIM_SOAK=1)")


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    """True for the full-length run."""
    return bool(request.config.getoption("--soak")) or os.environ.get("KVMSHIM_SOAK") == "1"
