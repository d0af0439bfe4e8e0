"""Pre-copy live migration and snapshots over the dirty log (docs/migration.md).

``migrate(machine, uri)`` moves a running guest to a destination that ``incoming(machine, uri)``
loads into a machine built the same way; ``Snapshots(machine).save(path[, diff=True])`` and
``restore(machine, *paths)`` do the same through files. URIs: ``unix:PATH``, ``tcp:HOST:PORT``,
``file:PATH``. Device models take part by declaring a ``vmstate`` (``VMStateDescription``).
"""
from .errors import (
                     ChecksumError,
                     ConfigMismatch,
                     LinkError,
                     MigrationBlocked,
                     MigrationError,
                     StateError,
                     StreamError,
                     TruncatedStream,
                     UnknownSection,
)
from .incoming import incoming, resume
from .precopy import migrate
from .snapshot import Snapshots, SnapshotStats, read_snapshot_config, restore
from .stats import IncomingStats, MigrationStats, RoundStats
from .transport import Listener, UriError
from .vmstate import VMStateDescription

__all__ = [
    "ChecksumError", "ConfigMismatch", "IncomingStats", "LinkError", "Listener", "MigrationBlocked", "MigrationError",
    "MigrationStats", "RoundStats", "SnapshotStats", "Snapshots", "StateError", "StreamError", "TruncatedStream",
    "UnknownSection", "UriError", "VMStateDescription", "incoming", "migrate", "read_snapshot_config", "restore",
    "resume",
]
