# gas-noheader: a GNU as guest without the kvmshim header line: flat at 0x1000.
# Prints "no header ok\n" and exits with status 0x14.
.include "common.inc"
.code16
.text
.globl _start
_start:
    PUTS msg
    EXIT 0x14
msg: .asciz "no header ok\n"
