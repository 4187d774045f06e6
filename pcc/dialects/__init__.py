"""Op families ("dialects"), declared once; importing this package registers every op.

- :mod:`pcc.dialects.nn`: float ops as frontends produce them (ONNX semantics).
- :mod:`pcc.dialects.pent`: exact integer ops on pentary types, produced by the quantizer; its broadcasting
  binary ops (``pent.mul``, ``pent.eadd``) in :mod:`pcc.dialects.pent_binary`, its data movement
  (``pent.gather``) in :mod:`pcc.dialects.pent_move`, ``pent.softmax`` in :mod:`pcc.dialects.pent_softmax`, the
  product of two activations (``pent.matmul``) in :mod:`pcc.dialects.pent_matmul`, the reciprocal square root of
  normalization layers (``pent.rsqrt``) in :mod:`pcc.dialects.pent_norm`.
"""

from pcc.dialects import nn, pent, pent_binary, pent_matmul, pent_move, pent_norm, pent_softmax  # noqa: F401
