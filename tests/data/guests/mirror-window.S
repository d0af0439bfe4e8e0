# kvmshim: kind=flat
# mirror-window: a 4 KiB RAM bank mirrored four times at 0x30000-0x33fff. Writes a byte
# through repeat 0 and a word through repeat 1, then reports them as read through
# repeats 3 and 2: outb of the byte, then outw of the word, to port 0x600.
.include "common.inc"
.code16
.text
.globl _start
_start:
    mov $0x3000, %ax
    mov %ax, %ds
    movb $0x5a, (0x0010)
    movw $0xbeef, (0x1020)
    mov (0x3010), %al
    mov $0x600, %dx
    outb %al, %dx
    mov (0x2020), %ax
    outw %ax, %dx
    EXIT 0
