"""memapi: QEMU's hierarchical memory API in pure Python.

MemoryRegion trees render into immutable FlatViews per AddressSpace; every
commit diffs old and new views and calls MemoryListeners. Each machine has its
own MemorySystem; the module-level transaction and global-dirty functions act
on the default one. Knows nothing of KVM.
"""
from .access import UNASSIGNED, IOMMUTLBEntry
from .address_space import AddressSpace
from .dirty import (
                    DirtyBitmapSnapshot,
                    GlobalDirty,
                    get_dirty,
                    reset_dirty,
                    set_dirty,
                    set_dirty_lebitmap,
                    snapshot_and_clear_dirty,
)
from .dispatch import dispatch_read, dispatch_write
from .errors import (
                    AliasCycleError,
                    AliasSubregionError,
                    ArgumentError,
                    CrossSystemError,
                    DirtyLogError,
                    InvalidRangeError,
                    ListenerError,
                    MemApiError,
                    NoSuchEventfdError,
                    NotAnAliasError,
                    NotASubregionError,
                    RamBlockError,
                    RegionInUseError,
                    RegionKindError,
                    TransactionError,
)
from .event_notifier import EventNotifier
from .flatview import FlatRange, FlatView
from .listener import MemoryListener, MemoryRegionSection
from .mtree import info_mtree
from .mtree_json import mtree_json
from .ops import (
                    UNASSIGNED_IO_OPS,
                    UNASSIGNED_MEM_OPS,
                    AccessRules,
                    Endianness,
                    MemoryRegionOps,
                    MemTxAttrs,
                    MemTxResult,
)
from .ram import PAGE_SIZE, DirtyClient, RamBlock
from .region import MAX_MASK_REPEATS, UINT64_MAX, Ioeventfd, MemoryRegion
from .regtable import Register, RegisterTable, Unknown, UnknownRegisterError
from .system import (
                    MemorySystem,
                    add_coalesced_flusher,
                    default_system,
                    global_dirty_log_start,
                    global_dirty_log_stop,
                    global_dirty_log_sync,
                    remove_coalesced_flusher,
                    transaction,
                    transaction_begin,
                    transaction_commit,
)
from .transaction_ops import MemoryTransaction, transaction_ops

__all__ = [
    "AccessRules", "AddressSpace", "AliasCycleError", "AliasSubregionError", "ArgumentError", "CrossSystemError",
    "DirtyBitmapSnapshot", "DirtyClient", "DirtyLogError", "Endianness", "EventNotifier", "FlatRange",
    "FlatView", "GlobalDirty", "IOMMUTLBEntry", "Ioeventfd", "InvalidRangeError", "ListenerError",
    "MAX_MASK_REPEATS", "MemApiError", "MemoryListener", "MemoryRegion", "MemoryRegionOps", "MemorySystem",
    "MemoryRegionSection", "MemoryTransaction", "MemTxAttrs", "MemTxResult", "NoSuchEventfdError",
    "NotAnAliasError", "NotASubregionError", "PAGE_SIZE", "RamBlock", "RamBlockError", "Register",
    "RegisterTable", "RegionInUseError", "RegionKindError", "TransactionError", "UINT64_MAX", "UNASSIGNED",
    "UNASSIGNED_IO_OPS", "UNASSIGNED_MEM_OPS", "Unknown", "UnknownRegisterError", "add_coalesced_flusher",
    "default_system", "dispatch_read", "dispatch_write", "get_dirty", "global_dirty_log_start", "global_dirty_log_stop",
    "global_dirty_log_sync", "info_mtree", "mtree_json", "remove_coalesced_flusher", "reset_dirty", "set_dirty",
    "set_dirty_lebitmap", "snapshot_and_clear_dirty", "transaction", "transaction_begin", "transaction_commit",
    "transaction_ops",
]
