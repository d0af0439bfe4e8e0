# kvmshim: kind=flat
# sweeper: dirties guest pages at a chosen rate and pattern (32-bit protected mode, flat segments,
# so it reaches all of the first 4 GiB). Each tick it reads the tick port (0x510): the value is the
# tick number (0 ends the run with exit status 0). It then writes that number as a dword at offset 0
# of PER_TICK pages, reads READS more pages without writing them, and, if SCREEN is set, shows the
# tick in hex at the top left of the text screen there. The host paces the rate by how long it
# takes to answer the port. No stack is used and interrupts stay off, so the guest writes nothing
# but those pages, the journal and the screen.
#
# Parameters: dwords from 0x1004 that the host patches after loading (Machine.set_params):
#   FIRST    first page of the range (GPA >> 12)
#   COUNT    pages in the range (the next page index is taken modulo COUNT)
#   PER_TICK pages written per tick
#   PATTERN  0: stride (index += STRIDE), 1: random (xorshift32)
#   STRIDE   the stride of pattern 0 (1 = sequential)
#   READS    pages only read per tick
#   JOURNAL  GPA of a bitmap where bit i is set when page FIRST+i is written (0: none)
#   SCREEN   GPA of an 80x25 text screen (0: none)
.include "common.inc"
.include "pm32.inc"
.set TICK_PORT, 0x510
.code16
PARAMS_BLOCK
FIRST:    .long 0x100
COUNT:    .long 64
PER_TICK: .long 16
PATTERN:  .long 0
STRIDE:   .long 1
READS:    .long 0
JOURNAL:  .long 0
SCREEN:   .long 0xb8000

main:
    ENTER_PM32 pm32

# ESI = next page index, per PATTERN; EDI = its GPA. Clobbers EAX, EDX.
.macro NEXT_PAGE
    cmpl $0, PATTERN
    jne 1f
    add STRIDE, %esi
    mov %esi, %eax
    jmp 2f
1:  mov %ebp, %eax
    shl $13, %eax
    xor %eax, %ebp
    mov %ebp, %eax
    shr $17, %eax
    xor %eax, %ebp
    mov %ebp, %eax
    shl $5, %eax
    xor %eax, %ebp
    mov %ebp, %eax
2:  xor %edx, %edx
    divl COUNT
    mov %edx, %esi
    mov FIRST, %edi
    add %esi, %edi
    shl $12, %edi
.endm

pm32:
    mov $-1, %esi               # the first stride step lands on index STRIDE-1
    mov $0x2545f491, %ebp       # xorshift32 state
tick:
    mov $TICK_PORT, %dx
    in %dx, %eax
    test %eax, %eax
    jz done
    mov %eax, %ebx              # EBX = this tick's value
    mov PER_TICK, %ecx
    jecxz reads
write_one:
    NEXT_PAGE
    mov %ebx, (%edi)
    mov JOURNAL, %eax
    test %eax, %eax
    jz 3f
    bts %esi, (%eax)
3:  loop write_one
reads:
    mov READS, %ecx
    jecxz show
read_one:
    NEXT_PAGE
    mov (%edi), %eax
    loop read_one
show:
    mov SCREEN, %edi
    test %edi, %edi
    jz tick
    mov $8, %ecx                # eight hex digits, most significant first
4:  rol $4, %ebx
    mov %ebx, %eax
    and $0xf, %eax
    mov hexdigits(%eax), %al
    mov $0x1f, %ah              # white on blue
    mov %ax, (%edi)
    add $2, %edi
    loop 4b
    jmp tick
done:
    mov $DEBUG_EXIT, %dx
    xor %al, %al
    outb %al, %dx
    hlt
    jmp done

hexdigits: .ascii "0123456789abcdef"
PM32_GDT
