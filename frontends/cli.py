"""The frontends' CLI: ``pcc compile`` (defined in :mod:`pcc.driver`, which owns the load -> passes -> emit flow)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the frontend commands to ``app``."""
    from pcc.driver import register as register_driver

    register_driver(app)
