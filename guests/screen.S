# kvmshim: kind=flat
# screen: a text-mode counter on the 80x25 colour text screen at 0xb8000, for the dirty-demo.
# It clears the screen and writes a title once, then on every tick reads the tick port (0x510;
# 0 ends the run with exit status 0) and changes a few cells: the tick number in decimal (row 12),
# a spinner next to it and a block that walks along row 14. Everything else stays as it was.
.include "common.inc"
.set TICK_PORT, 0x510
.set TEXT_SEG, 0xb800
.set COUNTER_END, 2 * (12 * 80 + 47)   # offset of the counter's last digit
.set SPINNER, 2 * (12 * 80 + 34)
.set BAR_ROW, 2 * (14 * 80)
.code16
.text
.globl _start
_start:
    cli
    cld
    mov $TEXT_SEG, %ax
    mov %ax, %es
    xor %di, %di
    mov $0x0720, %ax                # blank, grey on black
    mov $(80 * 25), %cx
    rep stosw
    mov $title, %si
    mov $(2 * (2 * 80 + 24)), %di
    mov $0x0f, %ah                  # bright white
1:  lodsb
    test %al, %al
    jz tick
    stosw
    jmp 1b

tick:
    mov $TICK_PORT, %dx
    in %dx, %eax
    test %eax, %eax
    jz done
    mov %eax, %ebp                  # EBP = tick

    mov $COUNTER_END, %di           # ten decimal digits, right to left
    mov $10, %cx
    mov $10, %ebx
2:  xor %edx, %edx
    divl %ebx
    add $'0', %dl
    mov $0x0e, %dh                  # yellow
    mov %dx, %es:(%di)
    sub $2, %di
    loop 2b

    mov %bp, %bx                    # spinner: one of | / - \ by tick mod 4
    and $3, %bx
    mov spinner(%bx), %al
    mov $0x0a, %ah                  # green
    mov %ax, %es:SPINNER

    mov %ebp, %eax                  # bar: the block moves one cell per tick along row 14
    xor %edx, %edx
    mov $80, %ebx
    divl %ebx
    mov %dx, %di
    shl $1, %di
    lea -2(%di), %bx                # the cell it leaves (column 79 when it wraps to 0)
    test %di, %di
    jnz 3f
    mov $158, %bx
3:  movw $0x0720, %es:BAR_ROW(%bx)
    movw $0x09db, %es:BAR_ROW(%di)  # light blue block
    jmp tick

done:
    EXIT 0

title:   .asciz "kvmshim dirty-demo: text screen"
spinner: .ascii "|/-\\"
