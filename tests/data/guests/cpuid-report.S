# kvmshim: kind=flat
# cpuid-report: executes CPUID for each (leaf, subleaf) of the table below and writes EAX, EBX,
# ECX and EDX to port 0x600 (four 32-bit OUTs per leaf), then exits with status 0.
.include "common.inc"
.set REPORT_PORT, 0x600
.code16
.text
.globl _start
_start:
    mov $leaves, %si
next:
    mov (%si), %eax
    cmp $0xffffffff, %eax
    je done
    mov 4(%si), %ecx
    cpuid
    mov %edx, %ebp              # OUT needs DX for the port
    mov $REPORT_PORT, %dx
    out %eax, %dx
    mov %ebx, %eax
    out %eax, %dx
    mov %ecx, %eax
    out %eax, %dx
    mov %ebp, %eax
    out %eax, %dx
    add $8, %si
    jmp next
done:
    EXIT 0

.p2align 2
leaves:
    .long 0, 0, 1, 0, 7, 0, 0x40000000, 0, 0x40000001, 0
    .long 0x80000000, 0, 0x80000001, 0, 0x80000002, 0, 0x80000003, 0, 0x80000008, 0
    .long 0xffffffff
