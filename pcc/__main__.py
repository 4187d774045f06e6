"""``python -m pcc``: the ``pcc`` command (also what ``torchrun -m pcc`` runs in every process)."""

from __future__ import annotations

import sys

from pcc.cli import main

if __name__ == "__main__":
    sys.exit(main())
