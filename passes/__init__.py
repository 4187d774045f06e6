"""Graph passes, one module each; importing this package registers them all with the pass manager."""

from pcc.passes import dce  # noqa: F401
