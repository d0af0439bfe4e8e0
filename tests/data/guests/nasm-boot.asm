; nasm-boot: a NASM boot sector (org 0x7c00, 512 bytes ending 0x55 0xAA). Checks that it was
; entered at 0000:7c00 with DL=0x80 (the first hard disk, as a BIOS hands it over), prints
; "boot sector ok\n" on the serial port and exits with status 0x11 (0x71 if DL was wrong).
bits 16
org 0x7c00
%include "common-nasm.inc"
start:
    cmp dl, 0x80
    jne .bad_dl
    xor ax, ax
    mov ds, ax
    PUTS msg
    mov ah, 0x0e                ; and one byte through the BIOS teletype (the real-mode services)
    mov al, `\n`
    int 0x10
    EXIT 0x11
.bad_dl:
    EXIT 0x71
msg: db "boot sector ok", 0
    times 510 - ($ - $$) db 0
    dw 0xaa55
