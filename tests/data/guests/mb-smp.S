# mb-smp: a multiboot v1 ELF32 kernel, as kvm-unit-tests builds theirs, for `kvmshim qemu -kernel`.
# In flat 32-bit protected mode it checks the loader's magic, prints its command line on COM1,
# reads fw_cfg's CPU count, starts vCPU 1 with INIT/SIPI at a real-mode trampoline it copies
# to 0x8000 (the AP writes 0x55 at 0x7000), checks the pc-testdev scratch port, and ends
# through isa-debug-exit at 0xf4: 0 for success (QEMU's status 1), else the failed step.
# Build: as --32 -o mb-smp.o mb-smp.S && ld -m elf_i386 -N -Ttext=0x100000 -o mb-smp.elf mb-smp.o
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003       # page-aligned modules, memory info; ELF program headers say the rest
    .set COM1, 0x3f8
    .set FW_CFG, 0x510
    .set APIC_ICR_LO, 0xfee00300
    .set AP_FLAG, 0x7000
    .set TRAMPOLINE, 0x8000

    .code32
    .text
    .globl _start
    .align 4
multiboot_header:
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
    mov $stack_top, %esp
    mov $1, %edi                    # step 1: the loader's magic
    cmp $0x2badb002, %eax
    jne fail
    mov 16(%ebx), %esi              # mbi->cmdline (flag bit 2 is set by the loader)
    call puts
    mov $newline, %esi
    call puts
    mov $2, %edi                    # step 2: fw_cfg's CPU count (FW_CFG_NB_CPUS = 5) is 2
    mov $FW_CFG, %dx
    mov $5, %ax
    out %ax, %dx
    inc %dx
    in %dx, %al
    mov %al, %cl
    in %dx, %al
    mov %al, %ch
    cmp $2, %cx
    jne fail
    mov $trampoline, %esi           # step 3: vCPU 1 runs the trampoline after INIT, SIPI
    mov $TRAMPOLINE, %edi
    mov $(trampoline_end - trampoline), %ecx
    rep movsb
    mov $3, %edi
    # INIT then SIPI to all but self, as SeaBIOS and kvm-unit-tests send them (on kvm_pvm an INIT
    # addressed to APIC ID 1 does not reach a vCPU that never ran)
    movl $0x000C4500, APIC_ICR_LO
    movl $(0x000C4600 | (TRAMPOLINE >> 12)), APIC_ICR_LO
    mov $50000000, %ecx
1:  cmpb $0x55, AP_FLAG
    je 2f
    loop 1b
    jmp fail
2:  mov $4, %edi                    # step 4: pc-testdev's scratch port keeps a dword
    mov $0xe0, %dx
    mov $0x12345678, %eax
    out %eax, %dx
    in %dx, %eax
    cmp $0x12345678, %eax
    jne fail
    mov $ok, %esi
    call puts
    xor %eax, %eax
    jmp done
fail:
    mov %edi, %eax
done:
    mov $0xf4, %dx
    out %eax, %dx
    hlt

puts:                               # ESI: a NUL-terminated string, polled out on COM1
    lodsb
    test %al, %al
    jz 2f
    mov %al, %ah
    mov $(COM1 + 5), %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    mov %ah, %al
    mov $COM1, %dx
    out %al, %dx
    jmp puts
2:  ret

trampoline:                         # vCPU 1 after its SIPI: real mode at 0800:0000
    .code16
    xor %ax, %ax
    mov %ax, %ds
    movb $0x55, AP_FLAG
1:  cli
    hlt
    jmp 1b
    .code32
trampoline_end:

    .section .rodata
newline: .asciz "\n"
ok:      .asciz "mb-smp: fw_cfg says 2 CPUs, vCPU 1 started, pc-testdev ok\n"

    .bss
    .align 16
    .skip 1024
stack_top:
