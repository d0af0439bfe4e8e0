# kvmshim: kind=bios
# Exit benchmark ROM (64 KiB, entered from the reset vector, so QEMU runs it unchanged with -bios):
# COUNT exits of one kind, then a write of 0 to the debug-exit port 0x501. KIND 0: OUTs of AL to
# port 0x700 (nothing there); KIND 1: byte stores to 0xd0000 (a test device under kvmshim, pc.rom
# under QEMU, an unslotted hole under the C loop: an MMIO exit each time). The builder defines
# COUNT and KIND with --defsym.
.code16
.text
.globl _start
_start:
    cli
    mov $COUNT, %ecx
.if KIND
    mov $0xd000, %ax
    mov %ax, %ds
1:  movb %al, (0)
.else
    mov $0x700, %dx
1:  outb %al, %dx
.endif
    dec %ecx
    jnz 1b
    mov $0x501, %dx
    xor %al, %al
    outb %al, %dx
2:  hlt
    jmp 2b

    .org 0xfff0, 0xff
reset_vector:
    ljmp $0xf000, $_start
    .org 0x10000, 0xff
