"""app.live: live curves, progress line and the callback factory, driven by real runs of core.experiment."""

from __future__ import annotations

import io
import math
import os
import threading

import pandas as pd
import pytest

from app.live import (
    InteractivePlot,
    LiveCurves,
    ProgressBar,
    close_callbacks,
    default_callbacks,
)
from core.config import ConfigError
from core.experiment import run
from tests.helpers import tiny_config

PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def _complete_png(data: bytes) -> bool:
    return data.startswith(PNG_START) and data.endswith(PNG_END)


def test_live_curves_replace_the_png_atomically_every_epoch(tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    live = LiveCurves(tmp_path, title="moons")
    png = tmp_path / "curves.png"
    seen: list[dict] = []

    def after_live(row: dict) -> None:  # runs right after LiveCurves, every epoch
        assert _complete_png(png.read_bytes())
        assert mpimg.imread(png).shape[0] > 100
        assert not list(tmp_path.glob("*.tmp*"))
        assert len(live.rows) == row["epoch"] == live.draws
        seen.append({"bytes": png.read_bytes(), "mtime": png.stat().st_mtime_ns})

    # a viewer polling the file in another thread only ever reads whole PNGs
    stop, torn = threading.Event(), []

    def viewer() -> None:
        while not stop.is_set():
            if png.exists():
                data = png.read_bytes()
                if not _complete_png(data):
                    torn.append(len(data))

    thread = threading.Thread(target=viewer)
    thread.start()
    try:
        run(tiny_config(epochs=4), out_dir=tmp_path, callbacks=[live, after_live])
    finally:
        stop.set()
        thread.join()
    assert torn == []
    assert len(seen) == 4
    assert len({s["bytes"] for s in seen}) == 4  # redrawn each epoch, not just touched
    to_curves = [(s, d) for s, d in replaced if d == str(png)]
    assert len(to_curves) == 4
    assert all(os.path.dirname(s) == str(tmp_path) and s != d for s, d in to_curves)
    assert [r["epoch"] for r in live.rows] == [1, 2, 3, 4]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["train_loss"]) == pytest.approx([r["train_loss"] for r in live.rows])


@pytest.mark.parametrize("every, min_seconds, draws", [(2, 0.0, 2), (1, 3600.0, 1)])
def test_live_curves_draw_every_k_epochs_and_at_most_once_per_min_seconds(
    tmp_path, every, min_seconds, draws
):
    live = LiveCurves(tmp_path, every, min_seconds=min_seconds)
    for epoch in range(1, 5):
        live(_row(epoch))
    assert live.draws == draws and len(live.rows) == 4
    assert (tmp_path / "curves.png").stat().st_size > 0


def _row(epoch: int, val_accuracy: float = 0.5) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 0.5,
        "val_loss": 1.2 / epoch,
        "val_accuracy": val_accuracy,
        "lr": 0.01,
        "seconds": 0.1,
    }


class FakeClock:
    """Returns 0, 1, 2, ... seconds: one tick per call (start, each epoch, close)."""

    def __init__(self) -> None:
        self.t = -1.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stopped_run(tmp_path, stream) -> tuple[list[str], pd.DataFrame]:
    """A 3-epoch run that a callback stops after epoch 2, with the bar closed as run.py does."""
    bar = ProgressBar(3, stream=stream, clock=FakeClock())

    def stop_at_2(row: dict) -> str | None:
        return "early_stopping" if row["epoch"] == 2 else None

    callbacks = [bar, stop_at_2]
    summary = {"stop_reason": "error"}
    try:
        summary = run(tiny_config(epochs=3), out_dir=tmp_path, callbacks=callbacks)
    finally:
        close_callbacks(callbacks, summary["stop_reason"])
    assert summary["stop_reason"] == "early_stopping" and summary["epochs_run"] == 2
    return stream.getvalue(), pd.read_csv(tmp_path / "metrics.csv")


def _expected_line(m: pd.Series, bar: str, eta: str) -> str:
    return (
        f"epoch {int(m.epoch)}/3  [{bar}]  loss {m.train_loss:.4f}  "
        f"val_acc {m.val_accuracy:.4f}  lr {m.lr:.1e}  eta {eta}"
    )


def test_progress_bar_in_a_log_prints_one_line_per_epoch_and_the_stop(tmp_path):
    text, metrics = _stopped_run(tmp_path, io.StringIO())
    # clock: start 0; epoch 1 at 1 s -> 2 epochs left at 1 s each; epoch 2 at 2 s -> 1 left
    assert text.split("\n") == [
        _expected_line(metrics.iloc[0], "####........", "0:00:02"),
        _expected_line(metrics.iloc[1], "########....", "0:00:01"),
        "stopped after epoch 2/3: early_stopping (0:00:03)",
        "",
    ]
    assert "\r" not in text


def test_progress_bar_on_a_terminal_redraws_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # wide enough for the whole line
    text, metrics = _stopped_run(tmp_path, TTY())
    first = _expected_line(metrics.iloc[0], "####........", "0:00:02")
    second = _expected_line(metrics.iloc[1], "########....", "0:00:01")
    pad = " " * max(len(first) - len(second), 0)  # blanks what a longer first line left
    assert text == (
        f"\r{first}\r{second}{pad}\nstopped after epoch 2/3: early_stopping (0:00:03)\n"
    )


def test_progress_bar_every_k_and_regression_rows():
    stream = io.StringIO()
    bar = ProgressBar(5, stream=stream, every=2, clock=FakeClock())
    for epoch in range(1, 6):
        bar(_row(epoch, val_accuracy=math.nan))
    bar.close("max_epochs")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/5", "2/5", "4/5", "5/5"]
    assert (
        "val_loss 0.2400" in lines[-1] and "lr 1.0e-02" in lines[-1] and "val_acc" not in lines[-1]
    )
    assert lines[-1].endswith("took 0:00:05")  # finished: no "stopped" line


def test_interactive_plot_needs_a_display(monkeypatch, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(ConfigError, match="interactive: no display"):
        InteractivePlot()
    with pytest.raises(ConfigError, match="interactive: no display"):
        default_callbacks(tmp_path, 10, interactive=True)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    with pytest.raises(ConfigError, match="interactive: MPLBACKEND=Agg cannot open a window"):
        InteractivePlot()


def test_default_callbacks(tmp_path):
    callbacks = default_callbacks(tmp_path, 100, stream=io.StringIO())
    assert [type(c) for c in callbacks] == [LiveCurves, ProgressBar]
    assert callbacks[1].every == 4  # ~25 lines per run in a log
    assert [type(c) for c in default_callbacks(None, 5)] == [ProgressBar]
    assert default_callbacks(tmp_path, 5, live_plot=False, progress=False) == []


def test_progress_bar_drops_the_bar_on_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    stream = TTY()
    ProgressBar(3, stream=stream, clock=FakeClock())(_row(1))
    line = stream.getvalue()[1:]
    assert len(line) == 59 and line.startswith("epoch 1/3  loss 1.0000  val_acc 0.5000")
