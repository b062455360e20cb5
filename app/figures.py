"""Figures of a run (loss, accuracy and lr curves) and the two helpers every figure uses:
``pyplot()`` (matplotlib, headless unless a display is there) and ``save_figure`` (atomic).

seaborn and matplotlib are imported inside the functions: plotting is slow to import.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def pyplot():
    """matplotlib.pyplot, on the Agg backend when there is no display (or MPLBACKEND=Agg)."""
    import matplotlib

    if not os.environ.get("DISPLAY") or os.environ.get("MPLBACKEND", "").lower() == "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, tight: bool = True) -> Path:
    """Save atomically (a viewer never reads half a PNG), close the figure; return the path.
    ``tight`` trims the margins to what is drawn (which draws the figure twice); a figure
    laid out with margins of its own passes False."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None)
    os.replace(tmp, path)
    plt.close(fig)
    return path


def plot_curves(metrics: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Loss, accuracy and learning rate against epoch, train and validation overlaid."""
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    sns.set_theme(style="whitegrid", context="notebook")
    has_acc = metrics["val_accuracy"].notna().any()
    panels = 3 if has_acc else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    for i, (name, label) in enumerate([("loss", "loss"), ("accuracy", "accuracy")][: panels - 1]):
        long = metrics.melt(
            id_vars="epoch", value_vars=[f"train_{name}", f"val_{name}"], var_name="split", value_name=label
        )
        long["split"] = long["split"].str.replace(f"_{name}", "", regex=False)
        sns.lineplot(data=long, x="epoch", y=label, hue="split", ax=axes[i], marker="o" if len(metrics) < 30 else None)
        axes[i].set_title(label)
        values = long[label].dropna()
        if name == "loss" and len(values) and values.min() > 0 and values.max() > 20 * values.min():
            axes[i].set_yscale("log")  # a loss falling by decades: the late train/val gap stays visible
            axes[i].set_title("loss (log scale)")
    sns.lineplot(data=metrics, x="epoch", y="lr", ax=axes[-1], color="tab:green")
    axes[-1].set_title("learning rate")
    axes[-1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_run_curves(run_dir: str | Path, summary: dict) -> Path | None:
    """curves.png of a finished run folder, from its metrics.csv; the title says how training
    ended (``summary`` is what core.experiment.run returned). None when no epoch ran."""
    run_dir = Path(run_dir)
    if not summary.get("epochs_run"):
        return None
    title = f"{summary['dataset']}: {summary['stop_reason']} after {summary['epochs_run']} epochs"
    return plot_curves(pd.read_csv(run_dir / "metrics.csv"), run_dir / "curves.png", title=title)
