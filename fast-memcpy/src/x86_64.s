# memcpy and memmove for x86_64 with SSE2 (the x86_64 baseline). System V ABI: rdi = dst,
# rsi = src, rdx = n; returns dst in rax; uses only caller-saved registers (rcx, r8-r10,
# xmm0-xmm7).
#
# Sizes up to 64 bytes load everything before storing anything, so they are correct for
# overlapping buffers too and memmove shares them. Sizes up to 2 KiB copy 64-byte blocks
# forwards; the last 64 bytes are loaded first and stored last, so the final partial block
# needs no byte loop. Larger copies use rep movsq, fast on every x86_64 for big sizes, with
# the last 8 bytes stored the same way.

    .text

    .globl fast_memcpy
    .type fast_memcpy, @function
    .p2align 4
fast_memcpy:
    mov rax, rdi
    cmp rdx, 16
    ja 20f
    cmp rdx, 8
    jb 11f
    mov rcx, qword ptr [rsi]
    mov r8, qword ptr [rsi + rdx - 8]
    mov qword ptr [rdi], rcx
    mov qword ptr [rdi + rdx - 8], r8
    ret
11:
    cmp rdx, 4
    jb 12f
    mov ecx, dword ptr [rsi]
    mov r8d, dword ptr [rsi + rdx - 4]
    mov dword ptr [rdi], ecx
    mov dword ptr [rdi + rdx - 4], r8d
    ret
12:
    # 0 to 3 bytes: the first, the middle and the last byte cover every case.
    test rdx, rdx
    jz 13f
    mov r9, rdx
    shr r9, 1
    movzx ecx, byte ptr [rsi]
    movzx r8d, byte ptr [rsi + rdx - 1]
    movzx r10d, byte ptr [rsi + r9]
    mov byte ptr [rdi], cl
    mov byte ptr [rdi + rdx - 1], r8b
    mov byte ptr [rdi + r9], r10b
13:
    ret
20:
    cmp rdx, 32
    ja 30f
    movups xmm0, xmmword ptr [rsi]
    movups xmm1, xmmword ptr [rsi + rdx - 16]
    movups xmmword ptr [rdi], xmm0
    movups xmmword ptr [rdi + rdx - 16], xmm1
    ret
30:
    cmp rdx, 64
    ja 40f
    movups xmm0, xmmword ptr [rsi]
    movups xmm1, xmmword ptr [rsi + 16]
    movups xmm2, xmmword ptr [rsi + rdx - 32]
    movups xmm3, xmmword ptr [rsi + rdx - 16]
    movups xmmword ptr [rdi], xmm0
    movups xmmword ptr [rdi + 16], xmm1
    movups xmmword ptr [rdi + rdx - 32], xmm2
    movups xmmword ptr [rdi + rdx - 16], xmm3
    ret
40:
    cmp rdx, 2048
    jae 60f
    movups xmm4, xmmword ptr [rsi + rdx - 64]
    movups xmm5, xmmword ptr [rsi + rdx - 48]
    movups xmm6, xmmword ptr [rsi + rdx - 32]
    movups xmm7, xmmword ptr [rsi + rdx - 16]
    lea r8, [rdi + rdx - 64]
41:
    movups xmm0, xmmword ptr [rsi]
    movups xmm1, xmmword ptr [rsi + 16]
    movups xmm2, xmmword ptr [rsi + 32]
    movups xmm3, xmmword ptr [rsi + 48]
    movups xmmword ptr [rdi], xmm0
    movups xmmword ptr [rdi + 16], xmm1
    movups xmmword ptr [rdi + 32], xmm2
    movups xmmword ptr [rdi + 48], xmm3
    add rsi, 64
    add rdi, 64
    sub rdx, 64
    cmp rdx, 64
    ja 41b
    movups xmmword ptr [r8], xmm4
    movups xmmword ptr [r8 + 16], xmm5
    movups xmmword ptr [r8 + 32], xmm6
    movups xmmword ptr [r8 + 48], xmm7
    ret
60:
    mov r8, qword ptr [rsi + rdx - 8]
    lea r9, [rdi + rdx - 8]
    mov rcx, rdx
    shr rcx, 3
    rep movsq
    mov qword ptr [r9], r8
    ret
    .size fast_memcpy, . - fast_memcpy

# Forwards is safe unless dst starts inside [src, src + n): then dst - src, taken unsigned, is
# below n. Up to 64 bytes fast_memcpy is safe either way. Otherwise copy 64-byte blocks from
# the end; the first 64 bytes are loaded first and stored last.
    .globl fast_memmove
    .type fast_memmove, @function
    .p2align 4
fast_memmove:
    mov rcx, rdi
    sub rcx, rsi
    cmp rcx, rdx
    jae fast_memcpy
    cmp rdx, 64
    jbe fast_memcpy
    mov rax, rdi
    movups xmm4, xmmword ptr [rsi]
    movups xmm5, xmmword ptr [rsi + 16]
    movups xmm6, xmmword ptr [rsi + 32]
    movups xmm7, xmmword ptr [rsi + 48]
    mov r8, rdi
    add rsi, rdx
    add rdi, rdx
51:
    movups xmm0, xmmword ptr [rsi - 16]
    movups xmm1, xmmword ptr [rsi - 32]
    movups xmm2, xmmword ptr [rsi - 48]
    movups xmm3, xmmword ptr [rsi - 64]
    movups xmmword ptr [rdi - 16], xmm0
    movups xmmword ptr [rdi - 32], xmm1
    movups xmmword ptr [rdi - 48], xmm2
    movups xmmword ptr [rdi - 64], xmm3
    sub rsi, 64
    sub rdi, 64
    sub rdx, 64
    cmp rdx, 64
    ja 51b
    movups xmmword ptr [r8], xmm4
    movups xmmword ptr [r8 + 16], xmm5
    movups xmmword ptr [r8 + 32], xmm6
    movups xmmword ptr [r8 + 48], xmm7
    ret
    .size fast_memmove, . - fast_memmove
