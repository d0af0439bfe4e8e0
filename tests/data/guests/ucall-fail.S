# ucall-fail: an ASSERT that fails (line 9), then DONE (never reached by run_until_done).
#include "ucall.inc"
.code16
.text
.globl _start
_start:
    mov $41, %eax
    cmp $42, %eax
    ASSERT e, "eax is %d, not 42", %eax
    DONE
