# kvmshim: kind=flat
# hammer: every vCPU (EBX = index) stores its index COUNT times into the dword at DEVICE (an MMIO
# register, so each store is an exit), then halts. 32-bit protected mode, no stack, interrupts off.
.include "common.inc"
.include "pm32.inc"
.code16
PARAMS_BLOCK
DEVICE: .long 0xd1000
COUNT:  .long 20000

main:
    ENTER_PM32 pm32

pm32:
    mov DEVICE, %edi
    mov COUNT, %ecx
store:
    mov %ebx, (%edi)
    loop store
halt:
    hlt
    jmp halt

PM32_GDT
