"""kvmshim: machines on KVM built from memapi regions and listeners/ bridges.

``Machine`` runs the bundled guests (serial, debug-exit, test devices), ``BareMachine`` is
RAM only, and ``kvmshim.pc.PcMachine`` is QEMU's i440FX ``pc``; all are MachineBase.
"""
from .base import MachineBase, VcpuThread
from .machine import BareMachine, Machine

__all__ = ["BareMachine", "Machine", "MachineBase", "VcpuThread"]
