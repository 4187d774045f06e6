# Assembler features: every operand form, comments, literals, symbols, sections and segments.
.equ N, 0p#0-                      ; 49
.equ BIG, 4882812
.input  a, shape=[2, 3], pents=2, scale=0.25, addr=0
.output b, shape=[6], pents=16, scale=1e-3, addr=table

.text
entry:  movi p1, N                 ; lower-case mnemonic and register
        MOVI SP, 1000
        MOVI P2, BIG
        MOVHI P2, -7812
        ADDI FP, SP, -39062
        LOAD P4, [P1]
        LOAD P5, [P1 - 3]
        STORE P5, [LR + table]
        LOADV P8, [P0 + 0p-], 24
        STOREV P1, [P2 - 312], 31
        PUSH P4
        POP P6
        CALL func
        BEQ P1, +2
        BLT P1, entry
        JUMP done
func:
        CLAMP P7, P1, P2, P3
        QUANT P9, P7, P8
        RET
done:   HALT
end:

.data
table:  .word 1, 2, 3
        .word -76293945312, 76293945312, 0p##############
.org 100
gap:
.org 200
second: .word table, end, N
last:
