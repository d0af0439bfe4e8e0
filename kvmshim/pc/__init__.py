"""The `pc` machine: QEMU 7.2's i440FX/PIIX memory map and devices on memapi, booting SeaBIOS on KVM.

One module per piece: ``memmap`` (pc.ram, pci, pc.bios, pc.rom), ``pci`` (config
space, mechanism #1), ``i440fx`` (PAM, SMRAM window), ``piix`` (PIIX3, PIIX4 PM, ACPI
timer), ``fw_cfg``, ``cmos``, ``debugcon``, ``ports`` (their shared region helper),
``machine`` (the whole, and the boot) and ``cli`` (``--machine pc`` for run and mtree).
See docs/pc-machine.md.
"""
