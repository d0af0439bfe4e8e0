# kvmshim: kind=flat
# rom-write: the host maps a ROM at GPA 0xe0000 (ES = 0xe000) starting with "ROM!".
# The guest writes 0x55 over its first 4 bytes (one 32-bit store), reads them back and
# checks they still read "ROM!" (the write must have been dropped): prints
# "rom intact\n" and exits 0, or "rom CHANGED\n" and exits 1.
.include "common.inc"
.code16
.set ROM_SEG, 0xe000
.set ROM_MAGIC, 0x214d4f52      # "ROM!" as a little-endian dword
.text
.globl _start
_start:
    mov $ROM_SEG, %ax
    mov %ax, %es
    movl $0x55555555, %es:0x0
    movl %es:0x0, %eax
    cmp $ROM_MAGIC, %eax
    jne changed
    PUTS intact_msg
    EXIT 0
changed:
    PUTS changed_msg
    EXIT 1

intact_msg:  .asciz "rom intact\n"
changed_msg: .asciz "rom CHANGED\n"
