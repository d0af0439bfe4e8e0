# kvmshim: kind=flat
# topology-stress: run by every vCPU of the machine (EBX = vCPU index) while the host changes the
# memory topology around it. Each round a vCPU writes the round's value ((index << 24) | round) into
# WORDS dwords of its stripe of W (one every 64 bytes) and reads them back, checks the tag
# 0x52000000 + page at offset 0 of each of the RO_PAGES pages at RO, writes the round to its probe
# register (PROBE + 8 * index, MMIO) and reads it back, then asks the control port whether to go on
# (0: stop). On stopping it stores its last round at RESULTS + 4 * index and halts; on any
# mismatch it writes the failing address to the error port and halts. 32-bit protected mode,
# no stack, interrupts off: its only exits are the probe, the control port and the error port.
.include "common.inc"
.include "pm32.inc"
.set CTRL_PORT, 0x520
.set ERROR_PORT, 0x524
.code16
PARAMS_BLOCK
W:        .long 0
STRIPE:   .long 0
WORDS:    .long 0
RO:       .long 0
RO_PAGES: .long 0
PROBE:    .long 0
RESULTS:  .long 0

main:
    ENTER_PM32 pm32

pm32:
    mov %ebx, %ebp              # EBP = vCPU index
    mov %ebp, %edi
    imul STRIPE, %edi
    add W, %edi                 # EDI = this vCPU's stripe
    xor %esi, %esi              # ESI = round
round:
    inc %esi
    mov %ebp, %eax
    shl $24, %eax
    or %esi, %eax               # EAX = this round's value
    mov WORDS, %ecx
    mov %edi, %edx
1:  mov %eax, (%edx)
    add $64, %edx
    loop 1b
    mov WORDS, %ecx
    mov %edi, %edx
2:  cmp %eax, (%edx)
    jne bad
    add $64, %edx
    loop 2b
    mov RO_PAGES, %ecx
    mov RO, %edx
    mov $0x52000000, %eax
3:  cmp %eax, (%edx)
    jne bad
    inc %eax
    add $0x1000, %edx
    loop 3b
    mov PROBE, %edx
    lea (%edx,%ebp,8), %edx
    mov %esi, (%edx)
    cmp %esi, (%edx)
    jne bad
    mov $CTRL_PORT, %dx
    in %dx, %eax
    test %eax, %eax
    jnz round
    mov RESULTS, %edx
    mov %esi, (%edx,%ebp,4)
    jmp halt
bad:
    mov %edx, %eax
    mov $ERROR_PORT, %dx
    out %eax, %dx
halt:
    hlt
    jmp halt

PM32_GDT
