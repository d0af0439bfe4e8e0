"""`kvmshim trace`: a KVM-aware ioctl tracer on python-ptrace.

``trace(argv)`` runs a command, follows its threads, forks and execs, and returns
every ioctl it made on /dev/kvm, VM and vCPU fds as decoded ``IoctlEvent``s;
``format_event`` prints one like strace and ``Summary`` counts them.
"""
from .events import IoctlEvent
from .format import format_event, format_summary
from .output import LineWriter
from .spawn import TraceError
from .state import Memslot
from .summary import Summary
from .tracer import Tracer, TraceResult, trace

__all__ = ["IoctlEvent", "LineWriter", "Memslot", "Summary", "TraceError", "TraceResult", "Tracer",
           "format_event", "format_summary", "trace"]
