# kvmshim: kind=flat
# doorbell: COUNT times, a 4-byte OUT of EAX to PORT (if PORT is not 0) and a 4-byte MMIO store
# of EAX to MMIO (if MMIO is not 0); EAX starts at VALUE and grows by STEP after each round.
# Then it exits with status 0 on the debug-exit port, or with SPIN set loops forever without
# exits (so the host sees what is still queued). 32-bit protected mode, flat segments.
# The C reference of the benchmarks (bench/c/doorbell.c) runs this same image.
.include "common.inc"
.include "pm32.inc"
.code16
PARAMS_BLOCK
COUNT: .long 1000
PORT:  .long 0
MMIO:  .long 0
VALUE: .long 0
STEP:  .long 0
SPIN:  .long 0

main:
    ENTER_PM32 pm32
pm32:
    mov COUNT, %ecx
    mov VALUE, %eax
    mov PORT, %edx
    mov MMIO, %edi
    mov STEP, %ebx
    jecxz done
ring:
    test %edx, %edx
    jz 1f
    out %eax, %dx
1:  test %edi, %edi
    jz 2f
    mov %eax, (%edi)
2:  add %ebx, %eax
    loop ring
done:
    cmpl $0, SPIN
    jne done
    mov $DEBUG_EXIT, %dx
    xor %al, %al
    outb %al, %dx
    hlt
    jmp done

PM32_GDT
