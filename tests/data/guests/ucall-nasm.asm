; ucall-nasm: the ucall macros of ucall-nasm.inc from real mode and from 32-bit protected mode
; (the same calls as ucall-gas.S). Exits 0x21 if run past DONE.
bits 16
org 0x1000
%include "ucall-nasm.inc"
%include "common-nasm.inc"
    mov ebx, 7
    mov cx, 0x1234
    SYNC 1
    SYNC 2, ebx, cx
    PRINTF `real mode: bx=%d cx=%#x\n`, bx, cx
    cmp ebx, 7
    ASSERT e, "ebx is 7"
    cli
    lgdt [gdtr]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword 0x08:protected
bits 32
protected:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    SYNC 3, ebx
    mov esi, mode
    PRINTF `%s: %u%%\n`, esi, ebx
    DONE
    EXIT 0x21
mode: db "protected mode", 0
align 8
gdt: dq 0, 0x00cf9b000000ffff, 0x00cf93000000ffff
gdtr: dw $ - gdt - 1
      dd gdt
