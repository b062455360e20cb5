"""Per-epoch callbacks for watching a run: live curves.png, a terminal progress line, a window.

A callback is ``f(row) -> str | None`` (see core.trainer); none of these ever stops training.
Training does not tell callbacks that it ended, so whoever calls ``run`` closes them:

    callbacks = default_callbacks(out_dir, cfg.trainer.epochs)
    summary = {"stop_reason": "error"}
    try:
        summary = run(cfg, out_dir=out_dir, callbacks=callbacks)
    finally:
        close_callbacks(callbacks, summary["stop_reason"])

Everything is headless by default (matplotlib's Agg backend through app.figures); a window
opens only for ``interactive=True`` and only when a display is available.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from core.config import ConfigError, check_range

__all__ = [
    "InteractivePlot",
    "LiveCurves",
    "ProgressBar",
    "close_callbacks",
    "default_callbacks",
    "display_available",
]


class LiveCurves:
    """Redraw ``out_dir/curves.png`` from the rows so far, every ``every`` epochs.

    app.figures.plot_curves saves to a temporary file in the same folder and renames it over
    curves.png (os.replace is atomic on one file system), so a viewer that reloads the file
    sees the previous figure or the new one, never half of one. A redraw costs ~0.3 s, so
    ``min_seconds`` bounds how often fast runs pay it; run.py draws the final figure anyway.
    """

    def __init__(
        self, out_dir: str | Path, every: int = 1, *, title: str = "", min_seconds: float = 0.0
    ) -> None:
        check_range("live_curves.every", every, low=1)
        check_range("live_curves.min_seconds", min_seconds, low=0.0)
        self.path = Path(out_dir) / "curves.png"
        self.every = int(every)
        self.title = title
        self.min_seconds = float(min_seconds)
        self.rows: list[dict] = []
        self.draws = 0
        self._last_draw = -math.inf

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        now = time.monotonic()
        if len(self.rows) % self.every == 0 and now - self._last_draw >= self.min_seconds:
            self.draw()
            self._last_draw = time.monotonic()
        return None

    def draw(self) -> Path:
        import pandas as pd

        from .figures import plot_curves

        self.path.parent.mkdir(parents=True, exist_ok=True)
        epoch = self.rows[-1]["epoch"]
        title = f"{self.title} (epoch {epoch})" if self.title else f"live: epoch {epoch}"
        plot_curves(pd.DataFrame(self.rows), self.path, title=title)
        self.draws += 1
        return self.path


def _clock_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


class ProgressBar:
    """One status line per epoch: epoch i/N, a bar, train loss, val accuracy, lr and ETA.

    On a terminal the line is redrawn in place with \r; into a file or pipe (a log, CI) it
    prints one plain line every ``every`` epochs (and at the first and last). The ETA is the
    mean wall time per epoch so far (training plus every callback) times the epochs left.
    ``close(reason)`` ends the line and, when training stopped before the last epoch, says
    why; call it after run() returns (see close_callbacks), also on early stopping.
    """

    WIDTH = 12  # characters of the bar itself

    def __init__(
        self,
        total_epochs: int,
        *,
        stream: TextIO | None = None,
        every: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_range("progress.total_epochs", total_epochs, low=1)
        check_range("progress.every", every, low=1)
        self.total = int(total_epochs)
        self.stream = stream if stream is not None else sys.stderr
        self.every = int(every)
        self.clock = clock
        self.start = clock()
        self.epoch = 0
        self.closed = False
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._width = 0  # length of the line on screen, to blank it when a shorter one follows

    def __call__(self, row: dict) -> None:
        self.epoch = int(row["epoch"])
        elapsed = self.clock() - self.start
        line = self.format(row, elapsed)
        if self.tty:
            columns = shutil.get_terminal_size().columns - 1  # a wrapped line defeats \r
            if len(line) > columns:
                line = self.format(row, elapsed, bar=False)[:columns]
            pad = " " * max(self._width - len(line), 0)
            self.stream.write("\r" + line + pad)
            self._width = len(line)
        elif self.epoch % self.every == 0 or self.epoch in (1, self.total):
            self.stream.write(line + "\n")
        self.stream.flush()
        return None

    def format(self, row: dict, elapsed: float, *, bar: bool = True) -> str:
        """The status line for ``row``, ``elapsed`` seconds after the bar was created."""
        i, n = int(row["epoch"]), self.total
        eta = elapsed / i * (n - i) if i > 0 else math.nan
        parts = [f"epoch {i:>{len(str(n))}}/{n}"]
        if bar:
            done = round(self.WIDTH * min(i, n) / n)
            parts.append(f"[{'#' * done}{'.' * (self.WIDTH - done)}]")
        parts.append(f"loss {_number(row.get('train_loss'), '.4f')}")
        val_acc = row.get("val_accuracy")
        if isinstance(val_acc, (int, float)) and math.isfinite(val_acc):
            parts.append(f"val_acc {val_acc:.4f}")
        else:  # regression: no accuracy, show the validation loss instead
            parts.append(f"val_loss {_number(row.get('val_loss'), '.4f')}")
        parts.append(f"lr {_number(row.get('lr'), '.1e')}")
        parts.append(f"eta {_clock_text(eta)}" if i < n else f"took {_clock_text(elapsed)}")
        return "  ".join(parts)

    def close(self, reason: str = "") -> None:
        """Finish the line; say why training stopped if it stopped before the last epoch."""
        if self.closed:
            return
        self.closed = True
        if self.tty and self._width:
            self.stream.write("\n")
        if 0 < self.epoch < self.total:  # no epoch yet: the caller reports its own error
            why = reason or "stopped"
            took = _clock_text(self.clock() - self.start)
            self.stream.write(f"stopped after epoch {self.epoch}/{self.total}: {why} ({took})\n")
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("error" if exc_type is not None else "")


# ----------------------------------------------------------------------------- window

NON_INTERACTIVE_BACKENDS = ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


def display_available() -> bool:
    """True where a GUI window can open: macOS, Windows, or an X11/Wayland session."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class InteractivePlot:
    """A matplotlib window with loss and accuracy against epoch, updated every epoch.

    Only on request: it needs a display and an interactive backend, and raises a one-line
    ConfigError naming what is missing otherwise (curves.png needs neither).
    """

    def __init__(self, *, title: str = "") -> None:
        if not display_available():
            raise ConfigError(
                "interactive: no display (DISPLAY and WAYLAND_DISPLAY are unset); "
                "curves.png is still written, open it in a viewer"
            )
        if os.environ.get("MPLBACKEND", "").lower() in NON_INTERACTIVE_BACKENDS:
            raise ConfigError(
                f"interactive: MPLBACKEND={os.environ['MPLBACKEND']} cannot open a window; "
                "unset it or choose an interactive backend (e.g. TkAgg, QtAgg)"
            )
        import matplotlib.pyplot as plt

        backend = plt.get_backend().lower()
        if backend in NON_INTERACTIVE_BACKENDS:
            raise ConfigError(
                f"interactive: matplotlib backend {backend!r} cannot open a window; "
                "install tkinter or PyQt, or set MPLBACKEND=TkAgg"
            )
        self.plt = plt
        plt.ion()
        self.fig, self.axes = plt.subplots(1, 2, figsize=(10, 3.8))
        self.fig.suptitle(title or "training")
        self.lines: dict[str, Any] = {}
        for ax, name in zip(self.axes, ("loss", "accuracy"), strict=True):
            for split in ("train", "val"):
                (self.lines[f"{split}_{name}"],) = ax.plot([], [], marker="o", label=split)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.legend()
        self.rows: list[dict] = []
        plt.show(block=False)

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        epochs = [r["epoch"] for r in self.rows]
        for key, line in self.lines.items():
            line.set_data(epochs, [r.get(key, math.nan) for r in self.rows])
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        self.fig.canvas.draw_idle()
        self.plt.pause(0.001)  # lets the GUI event loop draw
        return None

    def close(self, reason: str = "") -> None:
        self.plt.ioff()  # the window stays open until the user closes it


# ----------------------------------------------------------------------------- factory


def default_callbacks(
    out_dir: str | Path | None,
    total_epochs: int,
    *,
    live_plot: bool = True,
    progress: bool = True,
    interactive: bool = False,
    title: str = "",
    stream: TextIO | None = None,
) -> list:
    """The callbacks of a single run: live curves.png (throttled), progress line, window.

    The live plot is skipped without an out_dir. Close them with close_callbacks().
    """
    callbacks: list = []
    if interactive:  # first, so a missing display fails before anything is drawn
        callbacks.append(InteractivePlot(title=title))
    if live_plot and out_dir is not None:
        callbacks.append(LiveCurves(out_dir, title=title, min_seconds=2.0))
    if progress:
        # into a log: ~25 lines per run; on a terminal every epoch redraws the one line
        every = max(1, total_epochs // 25)
        callbacks.append(ProgressBar(total_epochs, stream=stream, every=every))
    return callbacks


def close_callbacks(callbacks: list, reason: str = "") -> None:
    """Call ``close(reason)`` on every callback that has one (reason: the stop reason)."""
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if callable(close):
            close(reason)
