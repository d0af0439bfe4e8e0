# kvmshim: kind=flat
# sweeper-check: dirties pages continuously, then checks its own memory; the migration demo's guest.
# 32-bit protected mode, flat segments, interrupts off, no stack and no device but the serial port
# and debug-exit, so it runs the same on any machine that has those, before and after a migration.
#
# Every page of the range carries a pair: dword 0 = V and dword 1023 = V ^ 0x5a5a5a5a. Setting up,
# the guest writes a pair into every page (so every page is in use) and keeps in EBP the sum of all
# the dwords it wrote; each tick it rewrites PER_TICK pages with V = tick * 0x9e3779b1 ^ index,
# subtracting the old pair from EBP and adding the new one. After TICKS ticks it adds every page's
# pair up again: the sum must equal EBP (which travelled in the vCPU state, not in RAM) and every
# pair must match. A stale or misplaced page breaks one or the other. It prints
# "sweeper-check: ok" and exits 0, or says which check failed and exits 1 (a bad pair's page index
# is left in the dword at bad_index).
#
# Parameters: dwords from 0x1004 that the host patches after loading (Machine.set_params):
#   FIRST    first page of the range (GPA >> 12)
#   COUNT    pages in the range
#   PER_TICK pages rewritten per tick
#   RANDOM   0: the next page is index + STRIDE (mod COUNT); 1: xorshift32 (mod COUNT)
#   STRIDE   the step of RANDOM=0
#   TICKS    ticks before the check
#   TICK_TSC TSC cycles from one tick's start to the next (below 2**32; 0: no pacing). The wait
#            compares low TSC dwords unsigned, so a TSC that moved backwards ends it at once.
.include "common.inc"
.include "pm32.inc"
.set PAIR_XOR, 0x5a5a5a5a
.set GOLDEN, 0x9e3779b1
.code16
PARAMS_BLOCK
FIRST:    .long 0x100
COUNT:    .long 256
PER_TICK: .long 16
RANDOM:   .long 0
STRIDE:   .long 1
TICKS:    .long 1000
TICK_TSC: .long 0

main:
    ENTER_PM32 pm32

# EDI = the GPA of page index ESI.
.macro PAGE_ADDRESS
    mov FIRST, %edi
    add %esi, %edi
    shl $12, %edi
.endm

# ESI = the next page index, per RANDOM (ESP holds the xorshift32 state). Clobbers EAX, EDX.
.macro NEXT_PAGE
    cmpl $0, RANDOM
    jne 1f
    mov %esi, %eax
    add STRIDE, %eax
    jmp 2f
1:  mov %esp, %eax
    shl $13, %eax
    xor %eax, %esp
    mov %esp, %eax
    shr $17, %eax
    xor %eax, %esp
    mov %esp, %eax
    shl $5, %eax
    xor %eax, %esp
    mov %esp, %eax
2:  xor %edx, %edx
    divl COUNT
    mov %edx, %esi
.endm

# Write the pair of value EAX into the page at EDI and add it to EBP.
.macro PUT_PAIR
    mov %eax, (%edi)
    add %eax, %ebp
    xor $PAIR_XOR, %eax
    mov %eax, 4092(%edi)
    add %eax, %ebp
.endm

# Print the string at \msg (PUTS for 32-bit code, whose strings are reached through ESI).
.macro PUTS_ESI msg
    mov $\msg, %esi
    PUTS_SI
.endm

pm32:
    xor %ebp, %ebp              # EBP = the sum of every pair written
    mov $0x2545f491, %esp       # xorshift32 state
    xor %esi, %esi
fill:                           # every page gets the pair of tick 0
    PAGE_ADDRESS
    imul $GOLDEN, %esi, %eax
    not %eax
    PUT_PAIR
    inc %esi
    cmp COUNT, %esi
    jb fill
    xor %esi, %esi
    xor %ebx, %ebx              # EBX = the tick number
tick:
    inc %ebx
    cmp TICKS, %ebx
    ja check
    mov TICK_TSC, %ecx
    jecxz sweep
    rdtsc
    mov %eax, %ecx              # ECX = the low TSC dword when the tick started
wait:
    rdtsc
    sub %ecx, %eax
    cmp TICK_TSC, %eax
    jb wait
sweep:
    mov PER_TICK, %ecx
    jecxz tick
write_one:
    NEXT_PAGE
    PAGE_ADDRESS
    sub (%edi), %ebp            # the old pair leaves the sum
    sub 4092(%edi), %ebp
    imul $GOLDEN, %ebx, %eax
    xor %esi, %eax
    PUT_PAIR
    loop write_one
    jmp tick

check:
    xor %esi, %esi
    xor %ebx, %ebx              # EBX = the sum of every page's pair as it is now
check_one:
    PAGE_ADDRESS
    mov (%edi), %eax
    add %eax, %ebx
    xor $PAIR_XOR, %eax
    cmp 4092(%edi), %eax
    jne bad_pair
    add 4092(%edi), %ebx
    inc %esi
    cmp COUNT, %esi
    jb check_one
    cmp %ebp, %ebx
    jne bad_sum
    PUTS_ESI ok
    EXIT 0
bad_pair:
    mov %esi, bad_index
    PUTS_ESI bad_pair_msg
    EXIT 1
bad_sum:
    PUTS_ESI bad_sum_msg
    EXIT 1

ok:           .asciz "sweeper-check: ok\n"
bad_pair_msg: .asciz "sweeper-check: a page's two dwords disagree\n"
bad_sum_msg:  .asciz "sweeper-check: the pages do not add up to the sum kept in EBP\n"
.p2align 2
bad_index:    .long 0
PM32_GDT
