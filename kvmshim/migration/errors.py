"""The typed errors of migration and snapshots: each message names the section, region or rule."""
from __future__ import annotations

from ..errors import KvmshimError


class MigrationError(KvmshimError):
    """Migration or a snapshot failed. The source, if it was the one migrating, runs on as before."""


class LinkError(MigrationError):
    """The transport failed: connection refused, reset or closed, or a file that cannot be opened."""


class StreamError(MigrationError):
    """The stream is not a valid one; ``section`` names where it broke (None: in the header)."""

    def __init__(self, message: str, section: str | None = None) -> None:
        super().__init__(message)
        self.section = section


class TruncatedStream(StreamError):
    """The stream ended (or the link closed) in the middle of a section or before END."""


class ChecksumError(StreamError):
    """A section's CRC-32 does not match its contents."""


class UnknownSection(StreamError):
    """A section of a kind, device or RAM region this destination does not have."""


class ConfigMismatch(MigrationError):
    """The destination is not the source's machine (kind, RAM, vCPUs, devices); nothing was loaded."""


class StateError(MigrationError):
    """A vCPU, VM or device state could not be saved or loaded; the message names the section."""


class MigrationBlocked(MigrationError):
    """The machine cannot be migrated or snapshotted now: a device without migration state, a vCPU that
    will not stop, MIGRATION dirty tracking already in use, or a diff whose tracking was lost."""
