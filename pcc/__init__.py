"""pcc, the pentary compiler collection.

The stages live in their own folders of the source tree and install as subpackages: ``pcc.frontends``,
``pcc.passes``, ``pcc.backend``, ``pcc.runtime`` and ``pcc.trainer``.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout the stage folders sit beside this package (pyproject maps them with package-dir).
# When the checkout itself is on sys.path (``python -m pytest`` from the root), Python would find this
# folder before the installed mapping and miss the stages, so look for them beside it as well.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "frontends")):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821
