# kvmshim: kind=flat
# mmio: exercises the test MMIO device at GPA 0xd0000 (ES = 0xd000):
#   read  32-bit ID      @0x0  (expects 0x4b564d53)
#   write 32-bit 0x12345678 @0x4, read it back
#   write 16-bit 0xbeef     @0x8, read it back
#   write  8-bit 0x5a       @0xa, read it back
#   write 32-bit checksum   @0x10: the sum mod 2^32 of the four values read, each
#         zero-extended (0x5d8b6314 when all are as expected)
# then prints "mmio ok\n" and exits 0, or "mmio FAIL\n" and exits 1 if any value
# read differs from the one expected.
.include "common.inc"
.code16
.set TESTDEV_ID, 0x4b564d53
.text
.globl _start
_start:
    mov $TESTDEV_SEG, %ax
    mov %ax, %es

    movl %es:0x0, %ebx              # EBX = ID
    movl $0x12345678, %es:0x4
    movl %es:0x4, %ecx              # ECX = 32-bit scratch
    movw $0xbeef, %es:0x8
    movzwl %es:0x8, %edi            # EDI = 16-bit scratch
    movb $0x5a, %es:0xa
    movzbl %es:0xa, %ebp            # EBP = 8-bit scratch

    mov %ebx, %eax
    add %ecx, %eax
    add %edi, %eax
    add %ebp, %eax
    movl %eax, %es:0x10             # result register

    cmp $TESTDEV_ID, %ebx
    jne fail
    cmp $0x12345678, %ecx
    jne fail
    cmp $0xbeef, %edi
    jne fail
    cmp $0x5a, %ebp
    jne fail
    PUTS ok_msg
    EXIT 0
fail:
    PUTS fail_msg
    EXIT 1

ok_msg:   .asciz "mmio ok\n"
fail_msg: .asciz "mmio FAIL\n"
