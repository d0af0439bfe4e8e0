# kvmshim: kind=flat
# hello: prints "Hello from kvmshim guest!\n" on the serial port, then exits 0.
.include "common.inc"
.code16
.text
.globl _start
_start:
    PUTS msg
    EXIT 0

msg: .asciz "Hello from kvmshim guest!\n"
