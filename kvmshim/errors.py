"""kvmshim's own errors, and the one exit status the command line gives every error.

Each layer has one root: ``memapi.MemApiError`` (bad calls into the memory core),
``kvm.KvmError`` (a failed ioctl), ``listeners.errors.BridgeError`` (the kernel's limits,
guest faults), ``guests.GuestError`` (building and loading guests) and ``KvmshimError`` here
(machines, devices, the CLI). ``kvmshim`` turns each of them, and ``OSError``, into a
``kvmshim: error:`` line on stderr and ``EXIT_ERROR``, so a script tells kvmshim's own
failure from the status byte a guest wrote to its debug-exit port.
"""
from __future__ import annotations

#: kvmshim's own failures, usage errors included; env(1) and timeout(1) reserve 125 the same way.
#: A guest may write 125 too: the ``kvmshim: error:`` line on stderr tells the two apart.
EXIT_ERROR = 125
#: `kvmshim qemu`'s guest fault (an emulation failure, say). Even, so never an isa-debug-exit
#: status (``(v << 1) | 1`` is odd) and never 1, which kvm-unit-tests may count as a pass.
EXIT_GUEST_FAULT = 2
#: Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class KvmshimError(Exception):
    """Base of the errors kvmshim's machines, devices and commands raise."""


class UsageError(KvmshimError):
    """A command line that cannot run: what argparse cannot check by itself."""


class MachineStateError(KvmshimError, RuntimeError):
    """A machine call made where it cannot work, such as close() from one of its own vCPU threads."""


class GuestParamError(KvmshimError, KeyError):
    """``set_params`` named a parameter the guest does not have, or a guest that is not loaded."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
