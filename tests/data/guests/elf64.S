# elf64: a 64-bit ELF executable (linked at 2 MiB with `ld -m elf_x86_64`), entered in long mode
# with the first 4 GiB identity-mapped. Stores a quadword RIP-relative into its bss, reads it
# back through a 64-bit absolute pointer, prints "elf64 ok\n" and exits with status 0x17.
.include "common.inc"
.code64
.text
.globl _start
_start:
    mov $0x1122334455667788, %rax
    mov %rax, value(%rip)
    movabs $value, %rbx
    cmp (%rbx), %rax
    jne bad
    lea msg(%rip), %rsi
    PUTS_SI
    EXIT 0x17
bad:
    EXIT 0x77
.data
msg: .asciz "elf64 ok\n"
.bss
value: .quad 0
