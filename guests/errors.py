"""The typed errors of the guests package: each message names the file and the rule it breaks."""
from __future__ import annotations


class GuestError(RuntimeError):
    """Base of every guests error (what a CLI turns into one ``error:`` report)."""


class GuestBuildError(GuestError):
    """A guest could not be built; the first line says why, the rest is the tool's full output."""


class GuestFormatError(GuestError):
    """A file is not a guest kvmshim can load (unknown format, a malformed ELF or multiboot header)."""


class GuestLoadError(GuestError):
    """A load plan does not fit the machine: RAM too small or overlapping pieces."""
