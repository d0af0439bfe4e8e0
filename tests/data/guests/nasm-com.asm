; nasm-com: a DOS .COM program (org 0x100). Checks what DOS hands a .COM: CS=DS=ES=SS, SP=FFFE,
; `int 20h` at PSP:0 and a 0 word on the stack; prints through the serial port and through
; int 21h AH=09h/02h, then ends through int 21h AH=4Ch with status 0x13 (0x7x on a failed check).
bits 16
org 0x100
%include "common-nasm.inc"
start:
    cmp sp, 0xfffe
    jne .bad_sp
    mov ax, cs
    mov bx, ds
    cmp ax, bx
    jne .bad_seg
    mov bx, ss
    cmp ax, bx
    jne .bad_seg
    cmp word [0], 0x20cd        ; int 20h at PSP:0
    jne .bad_psp
    cmp word [0xfffe], 0        ; `ret` goes to PSP:0
    jne .bad_psp
    PUTS msg
    mov ah, 0x09
    mov dx, dos_msg
    int 0x21
    mov ah, 0x02
    mov dl, `\n`
    int 0x21
    mov ax, 0x4c13
    int 0x21
    EXIT 0x7f                   ; not reached
.bad_sp:
    EXIT 0x72
.bad_seg:
    EXIT 0x73
.bad_psp:
    EXIT 0x74
msg: db "com ok, ", 0
dos_msg: db "dos ok$"
