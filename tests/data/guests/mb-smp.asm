; mb-smp: a multiboot v1 kernel (address fields, so a flat image) for `kvmshim qemu -kernel`.
; In flat 32-bit protected mode it checks the loader's magic, prints its command line on COM1,
; reads fw_cfg's CPU count, starts vCPU 1 with INIT/SIPI at a real-mode trampoline it copies
; to 0x8000 (the AP writes 0x55 at 0x7000), checks the pc-testdev scratch port, and ends
; through isa-debug-exit at 0xf4: 0 for success (QEMU's status 1), else the failed step.
bits 32
org 0x100000
MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00010003          ; page-aligned modules, memory info, address fields
header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd header, header, image_end, image_end, start   ; header, load, load_end, bss_end, entry

COM1        equ 0x3f8
FW_CFG      equ 0x510
APIC_ICR_LO equ 0xfee00300
AP_FLAG     equ 0x7000
TRAMPOLINE  equ 0x8000

start:
    mov esp, stack_top
    mov edi, 1
    cmp eax, 0x2badb002             ; step 1: the loader's magic
    jne fail
    mov esi, [ebx + 16]             ; mbi->cmdline (flag bit 2 is set by the loader)
    call puts
    mov esi, newline
    call puts
    mov edi, 2                      ; step 2: fw_cfg's CPU count (FW_CFG_NB_CPUS = 5) is 2
    mov dx, FW_CFG
    mov ax, 5
    out dx, ax
    inc dx
    in al, dx
    mov cl, al
    in al, dx
    mov ch, al
    cmp cx, 2
    jne fail
    mov edi, 3                      ; step 3: vCPU 1 runs the trampoline after INIT, SIPI
    mov esi, trampoline
    mov edi, TRAMPOLINE
    mov ecx, trampoline_end - trampoline
    rep movsb
    mov edi, 3
    ; INIT then SIPI to all but self, as SeaBIOS and kvm-unit-tests send them (on kvm_pvm an INIT
    ; addressed to APIC ID 1 does not reach a vCPU that never ran)
    mov dword [APIC_ICR_LO], 0x000C4500
    mov dword [APIC_ICR_LO], 0x000C4600 | (TRAMPOLINE >> 12)
    mov ecx, 50000000
.wait:
    cmp byte [AP_FLAG], 0x55
    je .started
    loop .wait
    jmp fail
.started:
    mov edi, 4                      ; step 4: pc-testdev's scratch port keeps a dword
    mov dx, 0xe0
    mov eax, 0x12345678
    out dx, eax
    in eax, dx
    cmp eax, 0x12345678
    jne fail
    mov esi, ok
    call puts
    xor eax, eax
    jmp done
fail:
    mov eax, edi
done:
    mov dx, 0xf4
    out dx, eax
    hlt

puts:                               ; ESI: a NUL-terminated string, polled out on COM1
    lodsb
    test al, al
    jz .out
    mov ah, al
    mov dx, COM1 + 5
.poll:
    in al, dx
    test al, 0x20
    jz .poll
    mov al, ah
    mov dx, COM1
    out dx, al
    jmp puts
.out:
    ret

trampoline:                         ; vCPU 1 after its SIPI: real mode at 0800:0000
bits 16
    xor ax, ax
    mov ds, ax
    mov byte [AP_FLAG], 0x55
.halt:
    cli
    hlt
    jmp .halt
bits 32
trampoline_end:

newline: db 10, 0
ok:      db "mb-smp: fw_cfg says 2 CPUs, vCPU 1 started, pc-testdev ok", 10, 0
align 16
stack:   times 1024 db 0
stack_top:
image_end:
