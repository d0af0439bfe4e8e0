# kvmshim: kind=flat
# Benchmark guest: ECX OUTs of AL to port 0x700, then one OUT to 0x501 (debug exit).
.code16
.text
.globl _start
_start:
    mov $200000, %ecx
    mov $0x700, %dx
1:  outb %al, %dx
    dec %ecx
    jnz 1b
    mov $0x501, %dx
    outb %al, %dx
    hlt
