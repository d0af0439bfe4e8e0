# kvmshim: kind=flat
# Benchmark guest: ECX byte writes to unslotted MMIO at 0xd0000, then a debug exit.
.code16
.text
.globl _start
_start:
    mov $0xd000, %ax
    mov %ax, %ds
    mov $200000, %ecx
1:  movb %al, (0)
    dec %ecx
    jnz 1b
    mov $0x501, %dx
    outb %al, %dx
    hlt
