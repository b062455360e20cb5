"""Multirun results: one table and three comparison plots in the sweep folder.

``MultirunResults`` is a Hydra Callback (registered in conf/hydra/default.yaml). At the end of
``python run.py -m ...`` it reads every job folder of the sweep (the overrides Hydra saved in
``<job>/.hydra/overrides.yaml``, the run's ``summary.json`` and ``metrics.csv``) and writes:

  results.csv       one row per job: job, state, overrides (string and one column per key),
                    final train/val/test metrics, best epoch, epochs run, stop reason, seconds
  val_curves.png    validation loss and accuracy against epoch, all jobs overlaid
  test_metric.png   final test accuracy per job (test loss for regression)
  lr.png            learning rate against epoch, one line per job

A job without summary.json (it raised, or was killed) is a row with state ``failed`` and the
first line of its error.txt. ``collect`` and ``write_results`` work on any sweep folder, so
``python -m app.multirun outputs/multiruns/<date>/<time>`` redoes them by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .terminal import shown

FINAL = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"]
RUN = ["best_epoch", "epochs_run", "stop_reason", "seconds"]


class MultirunResults(Callback):
    """Hydra callback: results.csv and comparison plots when a multirun ends."""

    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # an nnsweep search draws its own study plots (hundreds of jobs overlaid say nothing)
        search = "nnsweep" in str(config.hydra.sweeper.get("_target_", ""))
        results = write_results(sweep_dir, plots=self.plots and not search)
        print(describe_results(results, sweep_dir))
        if (results.get("state") == "failed").any() and not search:
            # BaseException on purpose: Hydra turns an Exception in a callback into a warning
            raise SystemExit(1)  # a script sees that some job failed; the table is written
        # (in an nnsweep search a failed job is a FAIL trial of the study, not a failed command)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders holding a Hydra job (they have .hydra/overrides.yaml), in job-number order."""
    dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]
    return sorted(dirs, key=lambda d: (_job_number(d), str(d)))


def _job_number(job_dir: Path) -> int:
    """hydra.job.num from the saved hydra.yaml (the folder name is only the default subdir)."""
    import yaml

    try:
        saved = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        return int(saved["hydra"]["job"]["num"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return int(job_dir.name) if job_dir.name.isdigit() else -1


def _overrides(job_dir: Path) -> list[str]:
    import yaml

    return [
        str(o) for o in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    ]


def _override_key(override: str) -> str:
    """'optimizer.lr=0.1' -> 'optimizer.lr'; '+x=1' -> 'x' (the value column's name)."""
    return override.split("=", 1)[0].lstrip("+~")


def collect(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results: one row per job, curves: metrics.csv of every finished job with a job column)."""
    sweep_dir = Path(sweep_dir)
    rows: list[dict[str, Any]] = []
    curves: list[pd.DataFrame] = []
    for job_dir in job_dirs(sweep_dir):
        overrides = _overrides(job_dir)
        row: dict[str, Any] = {"job": _job_number(job_dir), "state": "failed"}
        row["overrides"] = " ".join(overrides)
        row.update({_override_key(o): o.split("=", 1)[1] if "=" in o else "" for o in overrides})
        summary_path = job_dir / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())
            row["state"] = "completed"
            row.update({k: summary.get(k) for k in FINAL + RUN})
        else:
            error = job_dir / "error.txt"
            row["error"] = (
                error.read_text().splitlines()[0] if error.exists() else "no summary.json"
            )
        row["dir"] = str(job_dir.relative_to(sweep_dir))
        rows.append(row)
        metrics_path = job_dir / "metrics.csv"
        if row["state"] == "completed" and metrics_path.exists():
            curves.append(pd.read_csv(metrics_path).assign(job=row["job"]))
    results = pd.DataFrame(rows)
    for column in results.columns:  # override values are text; numbers sort and plot better
        if column not in ("overrides", "state", "dir", "error", "stop_reason"):
            try:
                results[column] = pd.to_numeric(results[column])
            except (TypeError, ValueError):
                pass
    for column in ("job", "best_epoch", "epochs_run"):  # integers, also with failed jobs' blanks
        if column in results:
            results[column] = results[column].astype("Int64")
    if len(results):
        ordered = ["job", "state", "overrides"] + [
            c
            for c in results.columns
            if c not in ("job", "state", "overrides", *FINAL, *RUN, "error", "dir")
        ]
        ordered += [c for c in FINAL + RUN + ["error", "dir"] if c in results.columns]
        results = results[ordered]
    return results, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def labels(results: pd.DataFrame) -> dict[int, str]:
    """Job -> short legend label: only the overrides that differ between jobs."""
    split = {r.job: r.overrides.split() for r in results.itertuples()}
    keys = {_override_key(o) for ovs in split.values() for o in ovs}
    varying = {
        k
        for k in keys
        if len({next((o for o in ovs if _override_key(o) == k), None) for ovs in split.values()})
        > 1
    }
    out = {}
    for job, ovs in split.items():
        shown = [o for o in ovs if _override_key(o) in varying] or ovs
        out[job] = f"{job}: {' '.join(shown)}" if shown else f"job {job}"
    return out


def write_results(sweep_dir: str | Path, *, plots: bool = True) -> pd.DataFrame:
    """Write results.csv (and the comparison plots) into sweep_dir; return the table."""
    sweep_dir = Path(sweep_dir)
    results, curves = collect(sweep_dir)
    results.to_csv(sweep_dir / "results.csv", index=False)
    if plots and len(curves):
        plot_comparison(results, curves, sweep_dir)
    return results


def plot_comparison(results: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """val_curves.png, test_metric.png and lr.png: every finished job, labelled by overrides."""
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    from .figures import pyplot, save_figure

    plt = pyplot()
    sns.set_theme(style="whitegrid", context="notebook")
    names = labels(results)
    curves = curves.assign(run=curves["job"].map(names))
    order = [names[j] for j in results["job"] if names[j] in set(curves["run"])]
    has_acc = curves["val_accuracy"].notna().any()
    marker = "o" if curves["epoch"].max() < 30 else None
    legend_kw = {
        "loc": "upper left",
        "bbox_to_anchor": (1.02, 1.0),
        "fontsize": "small",
        "frameon": False,
    }
    paths = []

    # 1. validation curves of all jobs overlaid
    panels = ["val_loss", "val_accuracy"] if has_acc else ["val_loss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2.5, 4), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        sns.lineplot(
            data=curves, x="epoch", y=metric, hue="run", hue_order=order, marker=marker, ax=ax
        )
        ax.set_title(metric.replace("_", " "))
        values = curves[metric].dropna()
        if metric == "val_loss" and len(values) and 0 < 20 * values.min() < values.max():
            ax.set_yscale(
                "log"
            )  # falls by decades: keep the late differences between jobs visible
            ax.set_title("val loss (log scale)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.get_legend().remove()
    axes[0, -1].legend(*axes[0, 0].get_legend_handles_labels(), title="job", **legend_kw)
    fig.suptitle(f"validation curves, {len(order)} jobs")
    fig.tight_layout()
    paths.append(out / "val_curves.png")
    save_figure(fig, paths[-1])

    # 2. final test metric per job (failed jobs have no bar)
    metric = "test_accuracy" if has_acc else "test_loss"
    done = results[results["state"] == "completed"].assign(run=lambda d: d["job"].map(names))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(done) + 1.6))
    sns.barplot(
        data=done, y="run", x=metric, order=order, hue="run", hue_order=order, legend=False, ax=ax
    )
    for container in ax.containers:
        ax.bar_label(container, fmt="%.4f", padding=3, fontsize="small")
    if has_acc:
        low = float(done[metric].min())
        ax.set_xlim(max(0.0, low - 0.1 * (1.0 - low) - 0.02), 1.0)  # zoom on the differences
    n_failed = int((results["state"] == "failed").sum())
    note = f" ({n_failed} failed job{'s' * (n_failed > 1)} not shown)" if n_failed else ""
    ax.set(title=f"final {metric.replace('_', ' ')} per job{note}", ylabel="")
    fig.tight_layout()
    paths.append(out / "test_metric.png")
    save_figure(fig, paths[-1])

    # 3. learning rate against epoch per job
    fig, ax = plt.subplots(figsize=(7.7, 4))
    sns.lineplot(data=curves, x="epoch", y="lr", hue="run", hue_order=order, marker=marker, ax=ax)
    same = curves.groupby("epoch")["lr"].nunique().max() == 1
    title = "learning rate (first step of each epoch)" + (
        ", the same in every job" if same else ""
    )
    ax.set_title(title, pad=14)  # room for the axis' 1e-3 multiplier under it
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(title="job", **legend_kw)
    fig.tight_layout()
    paths.append(out / "lr.png")
    save_figure(fig, paths[-1])
    return paths


def describe_results(results: pd.DataFrame, sweep_dir: Path) -> str:
    """A few lines for the console: where the results are, the best job, failures."""
    where = shown(sweep_dir)
    if results.empty:
        return f"multirun: no job folders found in {where}"
    lines = [f"multirun results: {where}/results.csv (+ val_curves.png, test_metric.png, lr.png)"]
    done = results[results["state"] == "completed"]
    metric = (
        "val_accuracy"
        if "val_accuracy" in done and done["val_accuracy"].notna().any()
        else "val_loss"
    )
    if len(done) and metric in done:
        best = done.loc[
            done[metric].idxmax() if metric == "val_accuracy" else done[metric].idxmin()
        ]
        lines.append(f"best {metric} {best[metric]:.4f}: job {best['job']} ({best['overrides']})")
    failed = results[results["state"] == "failed"]
    for row in failed.itertuples():
        lines.append(f"job {row.job} failed: {row.error}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m app.multirun <sweep folder>")
    folder = Path(sys.argv[1])
    print(describe_results(write_results(folder), folder))
