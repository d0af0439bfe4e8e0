; ucall-fail: a NASM ASSERT that passes (line 7), one that fails (line 8).
bits 16
org 0x1000
%include "ucall-nasm.inc"
    mov al, 3
    cmp al, 4
    ASSERT ne, "al is not 4"
    ASSERT e, "al is %d", al
    DONE
