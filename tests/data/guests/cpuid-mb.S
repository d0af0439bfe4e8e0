# cpuid-mb: a multiboot v1 ELF32 kernel that prints CPUID's EAX EBX ECX EDX in hex on COM1, one
# line per (leaf, subleaf) of the table at the end, then writes isa-debug-exit at 0xf4. Run the
# same way under QEMU and `kvmshim qemu`, the two transcripts must be equal.
# Build: as --32 -o cpuid-mb.o cpuid-mb.S && ld -m elf_i386 -N -Ttext=0x100000 -o cpuid-mb.elf cpuid-mb.o
    .code32
    .text
    .globl _start
    .align 4
    .long 0x1BADB002, 3, -(0x1BADB002 + 3)   # multiboot: page-aligned modules, memory info
_start:
    mov $stack_top, %esp
    mov $leaves, %esi
1:  mov (%esi), %eax
    cmp $0xffffffff, %eax
    je 9f
    mov 4(%esi), %ecx
    push %esi
    cpuid
    push %edx
    push %ecx
    push %ebx
    push %eax
    mov $4, %edi
2:  pop %eax
    call hex
    mov $' ', %al
    call putc
    dec %edi
    jnz 2b
    mov $'\n', %al
    call putc
    pop %esi
    add $8, %esi
    jmp 1b
9:  mov $0xf4, %dx
    xor %eax, %eax
    out %eax, %dx
    hlt
hex:                        # EAX as 8 hex digits
    mov $8, %ecx
3:  rol $4, %eax
    push %eax
    and $0xf, %eax
    mov digits(%eax), %al
    push %ecx
    call putc
    pop %ecx
    pop %eax
    loop 3b
    ret
putc:
    mov %al, %ah
    mov $0x3fd, %dx
4:  in %dx, %al
    test $0x20, %al
    jz 4b
    mov %ah, %al
    mov $0x3f8, %dx
    out %al, %dx
    ret
    .section .rodata
digits: .ascii "0123456789abcdef"
leaves: .long 0,0, 1,0, 2,0, 4,0, 4,1, 4,2, 4,3, 0xb,0, 0xb,1, 0xd,0, 0x80000000,0, 0x80000001,0, 0x80000005,0, 0x80000006,0, 0x80000008,0, 0xffffffff,0
    .bss
    .skip 4096
stack_top:
