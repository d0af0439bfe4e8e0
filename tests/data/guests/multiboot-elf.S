# multiboot-elf: a multiboot kernel in an ELF32 file without address fields, so it loads by its
# program headers (the tests link it at 1 MiB with `ld -m elf_i386`). Checks EAX=0x2BADB002 and
# the information block EBX points at: memory fields (mem_lower 640, mem_upper 15360 on a 16 MiB
# machine), command line and one module. Prints the command line, the module's command line and
# the module's bytes (a NUL-terminated text), one per line, and exits with status 0x18
# (0x81-0x87 name the check that failed).
.include "common.inc"
.set MB_MAGIC, 0x1BADB002
.set MB_FLAGS, 0x3              # page-aligned modules, memory information
.code32
.text
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
.globl _start
_start:
    cmp $0x2BADB002, %eax
    jne 1f
    mov (%ebx), %ecx            # info flags
    test $0x1, %ecx
    jz 2f
    cmpl $640, 4(%ebx)
    jne 3f
    cmpl $15360, 8(%ebx)
    jne 4f
    test $0x4, %ecx
    jz 5f
    test $0x8, %ecx
    jz 6f
    cmpl $1, 20(%ebx)
    jne 7f
    mov 16(%ebx), %esi          # command line
    PUTS_SI
    mov $newline, %esi
    PUTS_SI
    mov 24(%ebx), %edi          # the module list
    mov 8(%edi), %esi           # module 0's command line
    PUTS_SI
    mov $newline, %esi
    PUTS_SI
    mov (%edi), %esi            # module 0's bytes
    PUTS_SI
    EXIT 0x18
1:  EXIT 0x81
2:  EXIT 0x82
3:  EXIT 0x83
4:  EXIT 0x84
5:  EXIT 0x85
6:  EXIT 0x86
7:  EXIT 0x87
.data
newline: .asciz "\n"
