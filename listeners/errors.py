"""The bridge's errors: one root, BridgeError, for everything listeners/ raises.

memapi's errors stay MemApiError (bad calls into the memory core) and kvm/'s stay
KvmError (a failed ioctl); these are the bridge's own: the kernel's limits met while
mirroring a FlatView (memslots, the dirty ring) and guests that stop in a way the
run loop must report.
"""


class BridgeError(Exception):
    """Base class of every error listeners/ raises."""


class MemslotExhaustedError(BridgeError):
    """More memslots needed than KVM_CAP_NR_MEMSLOTS allows."""


class DirtyRingError(BridgeError):
    """The dirty ring cannot be set up, or the kernel disagrees with what was reaped."""
