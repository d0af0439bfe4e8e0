# kvmshim: kind=flat
# pic-count: programs the master 8259A PIC (vector base 0x20, only IRQ 5 unmasked, the slave
# masked), points vector 0x25 at a real-mode handler and waits in HLT with interrupts on. It
# reports "ready" with outb 0 to port 0x600; the handler counts each interrupt, sends the PIC a
# non-specific EOI and reports the count the same way. After COUNT interrupts it exits (0x501).
.include "common.inc"
.set PIC1_CMD, 0x20
.set PIC1_DATA, 0x21
.set PIC2_DATA, 0xa1
.set IRQ, 5
.set VECTOR, 0x20 + IRQ
.set REPORT_PORT, 0x600
.set COUNT, 3
.code16
.text
.globl _start
_start:
    cli
    movw $handler, VECTOR * 4
    movw $0, VECTOR * 4 + 2
    mov $0x11, %al              # ICW1: edge triggered, cascade, ICW4 follows
    out %al, $PIC1_CMD
    mov $0x20, %al              # ICW2: IRQ 0 is vector 0x20
    out %al, $PIC1_DATA
    mov $0x04, %al              # ICW3: the slave on IRQ 2
    out %al, $PIC1_DATA
    mov $0x01, %al              # ICW4: 8086 mode
    out %al, $PIC1_DATA
    mov $(~(1 << IRQ) & 0xff), %al  # OCW1: only IRQ 5
    out %al, $PIC1_DATA
    mov $0xff, %al
    out %al, $PIC2_DATA
    xor %al, %al
    mov $REPORT_PORT, %dx
    out %al, %dx                # ready
    sti
wait:
    hlt
    cmpb $COUNT, count
    jb wait
    EXIT 0

handler:
    push %ax
    push %dx
    incb count
    mov $0x20, %al              # OCW2: non-specific EOI
    out %al, $PIC1_CMD
    mov count, %al
    mov $REPORT_PORT, %dx
    out %al, %dx
    pop %dx
    pop %ax
    iret

count: .byte 0
