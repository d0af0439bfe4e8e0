; nasm-flat: a NASM flat program assembled for 0x1000, run as a source (org 0x1000 -> flat at
; 0x1000) or as its assembled .bin (flat at 0000:1000). Prints "nasm flat ok\n", exits 0x12.
bits 16
org 0x1000
%include "common-nasm.inc"
    PUTS msg
    EXIT 0x12
msg: db "nasm flat ok", 10, 0
