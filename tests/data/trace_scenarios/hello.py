"""Boot the hello guest on a Machine: construction | load and run | close."""
from _scenario import mark, report

from kvmshim.machine import Machine

with Machine() as machine:
    slots = machine.kvm_memory.slot_table()
    mark(machine.kvm)
    machine.load("hello")
    machine.run(timeout=20)
    mark(machine.kvm)
    report(slots=slots, output=machine.serial.output.decode(), status=machine.exit_status)
