; multiboot-aout: a multiboot kernel as a flat NASM binary whose header carries the address
; fields (flag 16, the "a.out kludge"): loaded at 1 MiB with 4 KiB of bss after it, entered at
; `entry`. Checks EAX=0x2BADB002 and that its bss reads 0, prints "aout ok " and its command
; line, and exits with status 0x19 (0x91, 0x92 on a failed check).
bits 32
org 0x100000
%include "common-nasm.inc"
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010003         ; address fields, memory information, page-aligned modules
header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd header                   ; header_addr
    dd $$                       ; load_addr: the file from its first byte
    dd load_end                 ; load_end_addr
    dd load_end + 0x1000        ; bss_end_addr
    dd entry                    ; entry_addr
entry:
    cmp eax, 0x2BADB002
    jne .bad_magic
    cmp dword [load_end + 0xffc], 0
    jne .bad_bss
    PUTS msg
    mov esi, [ebx + 16]
    PUTS_SI
    EXIT 0x19
.bad_magic:
    EXIT 0x91
.bad_bss:
    EXIT 0x92
msg: db "aout ok ", 0
load_end:
