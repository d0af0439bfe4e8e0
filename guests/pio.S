# kvmshim: kind=flat
# pio: port I/O of every size to the test port range 0x600-0x60f. Sequence:
#   outb 0x11       -> 0x600
#   outw 0x2233     -> 0x602
#   outl 0x44556677 -> 0x604
#   inb  <- 0x608,  inw <- 0x60a,  inl <- 0x60c   (values chosen by the device)
#   outl (inb + inw + inl) mod 2^32, each zero-extended -> 0x600
# then exits 0 (no serial output).
.include "common.inc"
.code16
.set PIO_BASE, 0x600
.text
.globl _start
_start:
    mov $PIO_BASE, %dx
    mov $0x11, %al
    outb %al, %dx
    mov $(PIO_BASE + 2), %dx
    mov $0x2233, %ax
    outw %ax, %dx
    mov $(PIO_BASE + 4), %dx
    mov $0x44556677, %eax
    outl %eax, %dx

    mov $(PIO_BASE + 8), %dx
    inb %dx, %al
    movzbl %al, %ebx
    mov $(PIO_BASE + 0xa), %dx
    inw %dx, %ax
    movzwl %ax, %eax
    add %eax, %ebx
    mov $(PIO_BASE + 0xc), %dx
    inl %dx, %eax
    add %eax, %ebx

    mov $PIO_BASE, %dx
    mov %ebx, %eax
    outl %eax, %dx
    EXIT 0
