# elf32: a 32-bit ELF executable (the tests link it at 1 MiB with `ld -m elf_i386`), entered in
# flat 32-bit protected mode. Checks CS/DS are the flat selectors and ESP points at a stack,
# prints "elf32 ok\n" and exits with status 0x16.
.include "common.inc"
.code32
.text
.globl _start
_start:
    mov %cs, %ax
    cmp $0x08, %ax
    jne bad
    push $0x5a5a                # the stack works
    pop %eax
    cmp $0x5a5a, %eax
    jne bad
    mov $msg, %esi
    PUTS_SI
    EXIT 0x16
bad:
    EXIT 0x76
.data
msg: .asciz "elf32 ok\n"
