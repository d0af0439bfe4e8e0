# kvmshim: kind=services
# services: what a real-mode guest finds in low memory on a machine without a BIOS: the
# interrupt vector table at 0, a BIOS data area at 0x400 (COM1 at 0x3f8, 640 KiB of base
# memory) and, from 0x500, handlers that map the few calls tiny programs make onto the
# kvmshim devices. Loaded by the real-mode load plans (flat, boot sector, DOS .COM).
#
#   int 10h  AH=0Eh   teletype: AL to the serial port; other video functions do nothing
#   int 20h           end the run with status 0 (the debug-exit port)
#   int 21h  AH=02h   DL to the serial port;  AH=09h  the '$'-terminated string at DS:DX
#            AH=40h   write CX bytes at DS:DX to handle BX = 1 or 2 (AX = CX)
#            AH=00h   end with status 0;      AH=4Ch  end with status AL
#   others            CF set (int 21h: AX=1, invalid function; BIOS calls: AH=86h, unsupported)
#
# Handlers run on the caller's stack and change only what the call returns.
.include "common.inc"
.code16
.text
.globl _start
_start:

.set vector, 0
.rept 256
    .if vector == 0x10
        .word video, 0
    .elseif vector == 0x20
        .word terminate, 0
    .elseif vector == 0x21
        .word dos, 0
    .else
        .word unsupported, 0
    .endif
    .set vector, vector + 1
.endr
    .org 0x400
    .word SERIAL_THR            # BDA: COM1 base port
    .org 0x413
    .word 640                   # BDA: base memory in KiB
    .org 0x500

video:
    cmp $0x0e, %ah
    jne 1f
    call putc
1:  iret

dos:
    cmp $0x02, %ah
    je dos_putc
    cmp $0x09, %ah
    je dos_puts
    cmp $0x40, %ah
    je dos_write
    cmp $0x4c, %ah
    je exit
    test %ah, %ah
    je terminate
    mov $1, %ax
    jmp fail

terminate:
    xor %al, %al
exit:                           # AL: the exit status
    mov $DEBUG_EXIT, %dx
    outb %al, %dx
2:  hlt
    jmp 2b

dos_putc:                       # returns AL = the character, as DOS does
    mov %dl, %al
    call putc
    iret

dos_puts:                       # returns AL = '$'
    push %si
    mov %dx, %si
3:  lodsb
    cmp $0x24, %al              # '$'
    je 4f
    call putc
    jmp 3b
4:  pop %si
    iret

dos_write:
    cmp $1, %bx
    je 5f
    cmp $2, %bx
    je 5f
    mov $6, %ax                 # invalid handle
    jmp fail
5:  push %si
    push %cx
    mov %dx, %si
6:  jcxz 7f
    lodsb
    call putc
    dec %cx
    jmp 6b
7:  pop %cx
    pop %si
    mov %cx, %ax
    push %bp                    # clear CF in the caller's FLAGS
    mov %sp, %bp
    andw $0xfffe, 6(%bp)
    pop %bp
    iret

unsupported:
    mov $0x86, %ah
fail:                           # set CF in the caller's FLAGS (IP, CS, FLAGS above BP)
    push %bp
    mov %sp, %bp
    orw $1, 6(%bp)
    pop %bp
    iret

putc:                           # AL to the serial port once it can take a byte
    push %dx
    push %ax
    mov $SERIAL_LSR, %dx
8:  inb %dx, %al
    test $LSR_THR_EMPTY, %al
    jz 8b
    pop %ax
    mov $SERIAL_THR, %dx
    outb %al, %dx
    pop %dx
    ret
