"""Op families ("dialects"), declared once; importing this package registers every op.

- :mod:`pcc.dialects.nn`: float ops as frontends produce them (ONNX semantics).
- :mod:`pcc.dialects.pent`: exact integer ops on pentary types, produced by the quantizer.
"""

from pcc.dialects import nn, pent  # noqa: F401
