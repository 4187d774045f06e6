; The published processor's example style: sum 1..1000 into P2 and store it.
.output total, shape=[1], pents=16, scale=1.0, addr=result
.text
    MOVI P1, 1000          ; counter
    MOVI P2, 0             # accumulator
loop:
    ADD  P2, P2, P1
    ADDI P1, P1, -1
    BNE  P1, loop
    MOVI P3, result
    STORE P2, [P3 + 0]
    LOAD P4, [P3 + 0]
    HALT
.data
result: .word 0
