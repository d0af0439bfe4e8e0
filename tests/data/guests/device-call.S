# kvmshim: kind=flat
# device-call: writes 0x11223344 to the test device's 32-bit register at 0xd0004, reads its ID
# at 0xd0000 and reports the value on port 0x600, then exits 0. A test puts a device that
# raises over either access.
.include "common.inc"
.code16
.text
.globl _start
_start:
    mov $TESTDEV_SEG, %ax
    mov %ax, %es
    movl $0x11223344, %es:0x4
    movl %es:0x0, %eax
    mov $0x600, %dx
    outl %eax, %dx
    EXIT 0
