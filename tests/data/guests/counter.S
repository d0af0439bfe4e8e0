# kvmshim: kind=flat
# counter: every vCPU (EBX = index) increments the dword at COUNTERS + 4 * index forever, in
# 32-bit protected mode with no stack and interrupts off. With EVERY > 0 it also writes its index
# to port 0x528 after every EVERY increments (an exit); with EVERY = 0 it never exits on its own.
.include "common.inc"
.include "pm32.inc"
.set COUNTER_PORT, 0x528
.code16
PARAMS_BLOCK
COUNTERS: .long 0x10000
EVERY:    .long 0

main:
    ENTER_PM32 pm32

pm32:
    mov COUNTERS, %edi
    lea (%edi,%ebx,4), %edi
reload:
    mov EVERY, %ecx
count:
    incl (%edi)
    jecxz count
    loop count
    mov %ebx, %eax
    mov $COUNTER_PORT, %dx
    out %eax, %dx
    jmp reload

PM32_GDT
