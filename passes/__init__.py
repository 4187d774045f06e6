"""Graph passes, one module each; importing this package registers them all with the pass manager."""

from pcc.passes import (  # noqa: F401
    canonicalize,
    dce,
    fold_batchnorm,
    fold_flatten,
    fold_moves,
    fuse,
    plan_memory,
    quantize,
    schedule,
    tile,
)
