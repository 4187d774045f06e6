"""Print one of the README's two set-up commands: ``main`` (the first) or ``test`` (the second).

They are the first two fenced shell blocks of README.md, one line each.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def commands(readme: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", readme, flags=re.S)
    return [b.strip() for b in blocks[:2]]


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "test"
    cmds = commands((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8"))
    print(cmds[0] if which == "main" else cmds[1])
