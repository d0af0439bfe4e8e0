# kvmshim: kind=flat
# strio: one `rep outsb` of the 10 bytes "strio ok!\n" to the serial THR (no LSR
# polling), then exits 0. KVM may report it as one exit with io.count = 10 or as
# ten exits with count = 1 (kvm_pvm does the latter): honour io.count.
.include "common.inc"
.code16
.text
.globl _start
_start:
    cld
    mov $msg, %si
    mov $(msg_end - msg), %cx
    mov $SERIAL_THR, %dx
    rep outsb
    EXIT 0

msg: .ascii "strio ok!\n"
msg_end:
