; nasm-org0: a NASM program without org (offsets count from its first byte), loaded flat at
; 0x1000 and entered at 0100:0000 with DS=0x100, so its labels address its own bytes.
; Prints "nasm org 0 ok\n" and exits 0x1a.
bits 16
%include "common-nasm.inc"
    PUTS msg
    EXIT 0x1a
msg: db "nasm org 0 ok", 10, 0
