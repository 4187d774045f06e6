; One quantised 3x3 convolution layer on a tiny 4x4x2 image, then global average pooling.
.input  x, shape=[1, 2, 4, 4], pents=4, scale=0.05, addr=act, order=[0, 2, 3, 1]
.output y, shape=[1, 3], pents=4, scale=0.1, addr=out

.equ IMG, 32                       ; 4 x 4 x 2 activations
.text
    TLOADC 0, [P0 + bias], 16, 3, 0        ; bias broadcast over 16 pixels
    TLOAD  0, [P0 + act], 1, IMG, IMG
    TLOADW 0, [P0 + weights], 54          ; 3 x 3 x 3 x 2 pent weights
    CONV   0, 0, 0, 4, 4, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1
    REQUANT 64, 0, 48, 0p+0000, 9, 4     ; multiplier 625, shift 9
    TCLAMP 64, 64, 48, 0, 120            ; ReLU6-style clamp
    POOL   112, 64, 4, 4, 3, 4, 4, 1, 1, 0, 0, 0, 0, 1
    TSTORE [P0 + out], 112, 1, 3, 3
    SYNC
    HALT

.data
act:     .zero 32
out:     .zero 3
bias:    .word 10, -20, 0p#0-
weights: .word 0p+-0#=+-0+=#0-+-0, 0p=+#0-+0=-#+0-+0#, 0p+0-#=+-0+=#0-+-0, 0p00000+-0#=+-0+=
