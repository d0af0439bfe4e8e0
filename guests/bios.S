# kvmshim: kind=bios
# bios: a 64 KiB ROM image mapped at 0xffff0000 (and aliased at 0xf0000 as isa-bios).
# The CPU leaves reset at CS base 0xffff0000, IP 0xfff0, i.e. image offset 0xfff0,
# where a far jump enters segment 0xf000 (the alias), whose offsets equal image
# offsets. Prints "bios ok\n" on the serial port and exits 0. Uses no RAM.
.include "common.inc"
.code16
.text
.globl _start
_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    PUTS msg
    EXIT 0

msg: .asciz "bios ok\n"

    .org 0xfff0, 0xff
reset_vector:
    ljmp $0xf000, $_start
    .org 0x10000, 0xff
