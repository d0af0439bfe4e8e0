; nasm-com-ret: a .COM that ends with `ret`, which DOS turns into int 20h (exit status 0),
; after writing "ret\n" through int 21h AH=40h to stdout.
bits 16
org 0x100
    mov ah, 0x40
    mov bx, 1
    mov cx, len
    mov dx, msg
    int 0x21
    ret
msg: db "ret", 10
len equ $ - msg
