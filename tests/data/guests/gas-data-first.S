# kvmshim: kind=flat
# gas-data-first: data before _start. The image starts with a hlt and a message; the loader
# must enter at _start, which prints "entered at _start\n" and exits with status 0x15
# (entering at the image's first byte would halt with status 0).
.include "common.inc"
.code16
.text
early:
    hlt
msg: .asciz "entered at _start\n"
.globl _start
_start:
    PUTS msg
    EXIT 0x15
