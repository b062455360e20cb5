"""What the entry points and scripts print for a person at a terminal: bad command-line input
as one line (``OneLineParser``) and paths relative to the working directory (``shown``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["OneLineParser", "shown"]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose bad input is one line, ``<prefix>error: --flag: ...``, and status 2,
    without the usage text (``prefix``: e.g. ``"predict: "`` for a script)."""

    def __init__(self, *args: Any, prefix: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prefix}error: {message.removeprefix('argument ')}\n")


def shown(path: str | Path) -> str:
    """A path as the terminal shows it: relative to the working directory when below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
