# ucall-gas: the ucall macros of ucall.inc from real mode and from 32-bit protected mode.
# Real mode: SYNC 1; SYNC 2 with EBX=7 and CX=0x1234; PRINTF of both; a passing ASSERT.
# Protected mode: SYNC 3 with EBX; PRINTF of a string; DONE. Exits 0x20 if run past DONE.
#include "ucall.inc"
.include "common.inc"
.include "pm32.inc"
.code16
.text
.globl _start
_start:
    mov $7, %ebx
    mov $0x1234, %cx
    SYNC 1
    SYNC 2, %ebx, %cx
    PRINTF "real mode: bx=%d cx=%#x\n", %bx, %cx
    cmp $7, %ebx
    ASSERT e, "ebx is 7"
    ENTER_PM32 protected
protected:
    SYNC 3, %ebx
    mov $mode, %esi
    PRINTF "%s: %u%%\n", %esi, %ebx
    DONE
    EXIT 0x20
mode: .asciz "protected mode"
PM32_GDT
