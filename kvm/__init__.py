"""Thin cffi binding of /dev/kvm: one class per fd (Kvm -> Vm -> Vcpu), in the style of rust-vmm's kvm-ioctls."""
