# kvmshim: kind=flat
# unassigned: touches memory and a port that no region claims, on a machine whose RAM ends at
# 0x80000: reads a dword at 0x90000 and reports it on port 0x600, reads port 0x700 and reports
# it, writes both, reads 0x90000 again and reports it, then exits 0. QEMU's behaviour gives
# reports 0, 0xffffffff, 0 (unassigned memory reads 0, unassigned ports all ones, writes ignored).
.include "common.inc"
.set REPORT, 0x600
.set NOBODY, 0x700
.code16
.text
.globl _start
_start:
    mov $0x9000, %ax
    mov %ax, %es
    movl %es:0, %eax
    mov $REPORT, %dx
    outl %eax, %dx
    mov $NOBODY, %dx
    inl %dx, %eax
    mov $REPORT, %dx
    outl %eax, %dx
    movl $0x5a5a5a5a, %es:0
    mov $NOBODY, %dx
    outl %eax, %dx
    movl %es:0, %eax
    mov $REPORT, %dx
    outl %eax, %dx
    EXIT 0
