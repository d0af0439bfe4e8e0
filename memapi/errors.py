"""Typed errors of the memory API.

Every error is raised before any state changes, and its message names the
region, the address (where there is one) and the rule that was broken.
"""


class MemApiError(Exception):
    """Base class of every error the memory API raises for bad input."""


class RegionInUseError(MemApiError):
    """The region already has a container (QEMU asserts)."""


class NotASubregionError(MemApiError):
    """del_subregion of a region that lives in another container."""


class AliasCycleError(MemApiError):
    """The change would make a region reachable from itself (QEMU overflows its stack)."""


class AliasSubregionError(MemApiError):
    """Subregions on an alias are never rendered; we refuse them."""


class InvalidRangeError(MemApiError, ValueError):
    """A size, offset, address or priority that does not fit its field."""


class ArgumentError(MemApiError, TypeError):
    """An argument of the wrong type: a name, flag, buffer, callback or ops that is not one."""


class RamBlockError(MemApiError, OSError):
    """Host memory for a RAM block cannot be mapped (too large for the host, a bad fd)."""


class NotAnAliasError(MemApiError):
    """An alias-only operation on a region that is not an alias."""


class NoSuchEventfdError(MemApiError):
    """del_eventfd found no matching ioeventfd."""


class ListenerError(MemApiError):
    """A listener registered twice, unregistered while not registered, or malformed."""


class TransactionError(MemApiError):
    """transaction_commit without a matching begin."""


class DirtyLogError(MemApiError):
    """A dirty-tracking call with a bad client, flag set or region."""


class RegionKindError(MemApiError):
    """An operation that needs a region of another kind (RAM, ROM device, ...)."""


class CrossSystemError(MemApiError):
    """A region of one MemorySystem linked into (or reaching) a region of another."""
