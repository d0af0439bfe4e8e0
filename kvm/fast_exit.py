"""The exit loop's C helper, ``run_decoded(ctx, value, decode) -> int``: one call per exit.

A Python run loop pays per cffi call and per field it reads from kvm_run, so the helper
(compiled from kvm/_build.py with the binding) does the whole round trip in one call:
it first completes the previous exit's read with ``value`` (the data a PIO IN or MMIO
read returned, written into kvm_run as KVM expects before the next KVM_RUN), then runs
KVM_RUN with ``ctx.in_run`` set, then decodes the exit into one non-negative integer:

==============  ==========================================================================
bits 0-2        kind: OTHER, PIO_OUT, PIO_IN, MMIO_WRITE or MMIO_READ
bits 3-6        access size in bytes (all kinds but OTHER)
PIO: 8-23       port; PIO_OUT bits 32-63: the value written
MMIO: 12-63     guest-physical address; MMIO_WRITE's value is in ``ctx.value``
OTHER: 8-15     the exit reason: any exit the loop must read from kvm_run itself (HLT,
                faults, string I/O with count > 1, MMIO at or above 2**52, a coalesced
                ring with entries to replay first, or every exit when ``decode`` is 0);
                RUN_FAILED if KVM_RUN failed, with its errno in bits 16-31 (EINTR or
                EAGAIN after a kick or immediate_exit); RUN_STOPPED if ``ctx.stop`` was
                set, in which case KVM_RUN was not entered (a run loop's stop request)
==============  ==========================================================================

A record is an unsigned 64-bit int; a loop tests only ``rec & 7`` on its fast path.
Reads decoded as PIO_IN/MMIO_READ are completed by the *next* call, so a loop that stops
after one still completes it when it resumes (with 0 if the read's device raised).
"""
from __future__ import annotations

from ._kvm_cffi import lib

OTHER = lib.KVMSHIM_EXIT_OTHER
PIO_OUT = lib.KVMSHIM_EXIT_PIO_OUT
PIO_IN = lib.KVMSHIM_EXIT_PIO_IN
MMIO_WRITE = lib.KVMSHIM_EXIT_MMIO_WRITE
MMIO_READ = lib.KVMSHIM_EXIT_MMIO_READ
RUN_FAILED = lib.KVMSHIM_RUN_FAILED
RUN_STOPPED = lib.KVMSHIM_RUN_STOPPED
#: ``run_decoded(vcpu.run_ctx, value, decode)``, the compiled helper itself (no Python wrapper).
run_decoded = lib.kvmshim_run


def exit_reason(rec: int) -> int:
    """The exit reason of an OTHER record (RUN_FAILED: see run_errno())."""
    return rec >> 8 & 0xFF


def run_errno(rec: int) -> int:
    """The errno of a RUN_FAILED record."""
    return rec >> 16
