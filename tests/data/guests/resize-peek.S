# kvmshim: kind=flat
# resize-peek: writes 0x77 at 0x41000, then reports the byte at 0x43000 (outb to port 0x600).
.include "common.inc"
.code16
.text
.globl _start
_start:
    mov $0x4000, %ax
    mov %ax, %ds
    movb $0x77, (0x1000)
    mov (0x3000), %al
    mov $0x600, %dx
    outb %al, %dx
    EXIT 0
