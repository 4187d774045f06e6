"""Core commands of the ``pcc`` CLI (IR tools); stage commands live in each stage's ``cli.py``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the core commands to ``app``."""
