"""Seaborn plots of a study: history, each hyperparameter against the objective, learning
curves by trial state (shows pruning), parameter importance, and a heatmap of the two most
important parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

STATE_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "STALE": "tab:gray",
                "RUNNING": "tab:green", "WAITING": "tab:purple"}


def _setup():
    import seaborn as sns

    from app.figures import pyplot

    plt = pyplot()
    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    from app.figures import save_figure

    return save_figure(fig, path, tight=tight)


def param_columns(study, trials: pd.DataFrame) -> list[str]:
    names: list[str] = []
    for t in study.get_trials(deepcopy=False):
        names += [n for n in t.params if n not in names]
    return [n for n in names if n in trials and trials[n].nunique(dropna=True) > 1]


def is_log(study, name: str) -> bool:
    for t in study.get_trials(deepcopy=False):
        if name in t.distributions:
            return bool(getattr(t.distributions[name], "log", False))
    return False


def is_categorical(study, name: str) -> bool:
    from optuna.distributions import CategoricalDistribution

    for t in study.get_trials(deepcopy=False):
        if name in t.distributions:
            return isinstance(t.distributions[name], CategoricalDistribution)
    return True


def plot_history(study, trials: pd.DataFrame, path: Path, *, ylog: bool = False) -> Path:
    plt, sns = _setup()
    metric = study.user_attrs.get("metric", "objective")
    done = trials[trials["state"] == "COMPLETE"].copy()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(done):
        sns.scatterplot(data=done, x="number", y="value", ax=ax, color="tab:blue", label="complete trial", s=30)
        maximize = study.direction.name == "MAXIMIZE"
        best = done["value"].cummax() if maximize else done["value"].cummin()
        ax.step(done["number"], best, where="post", color="tab:red", label="best so far")
    pruned = trials[trials["state"] == "PRUNED"]
    if len(pruned) and pruned["value"].notna().any():
        sns.scatterplot(data=pruned, x="number", y="value", ax=ax, color="tab:orange", marker="x",
                        label="pruned (last reported)", s=30)
    ax.set(xlabel="trial", ylabel=metric, title=f"{study.study_name}: optimisation history ({len(trials)} trials)")
    if ylog and len(done):
        _log_axis(ax, done["value"], "y")
    ax.legend(loc="best")
    return _save(fig, path)


def plot_params(study, trials: pd.DataFrame, path: Path, *, ylog: bool = False) -> Path:
    plt, _ = _setup()
    metric = study.user_attrs.get("metric", "objective")
    names = param_columns(study, trials)
    done = trials[trials["state"] == "COMPLETE"]
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        data = done[[name, "value"]].dropna()
        if is_categorical(study, name):
            order = [str(v) for v in _sorted_values(data[name].unique())]
            _box_strip(ax, data[name].astype(str), data["value"], order)
            ax.tick_params(axis="x", rotation=30)
        else:
            ax.scatter(data[name], data["value"], s=25, color="tab:blue", edgecolors="white",
                       linewidths=0.5)
            if is_log(study, name):
                _log_axis(ax, data[name])
        ax.set(title=name, xlabel="", ylabel=metric)
        if ylog and len(data):
            _log_axis(ax, data["value"], "y")
        else:
            _focus(ax, data["value"], study.direction.name == "MAXIMIZE")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if not names:
        axes.flat[0].text(0.5, 0.5, "no parameter varied", ha="center", va="center")
    fig.suptitle(f"{study.study_name}: {metric} against each hyperparameter (complete trials)",
                 y=1 - 0.12 / fig.get_figheight())
    # fixed margins in inches, room for the rotated category names, rather than tight_layout
    # and a tight bounding box, which measure every text of the twelve subplots and draw the
    # figure twice (params.png 1.24-1.45 -> 0.66-0.93 s, the longest plot of the report)
    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(left=1.0 / w, right=1 - 0.3 / w, top=1 - 0.7 / h, bottom=0.85 / h,
                        wspace=0.28, hspace=0.5)
    return _save(fig, path, tight=False)


def _box_strip(ax, labels: pd.Series, values: pd.Series, order: list[str]) -> None:
    """A box per category (no outliers drawn) with its points over it, jittered sideways:
    seaborn's boxplot + stripplot look, drawn with matplotlib directly (seaborn's two calls
    cost ~40 ms more a subplot)."""
    rng = np.random.default_rng(0)  # the same jitter every time
    grey = "0.3"
    for x, category in enumerate(order):
        ys = values[labels == category].to_numpy(dtype=float)
        if not len(ys):
            continue
        ax.boxplot([ys], positions=[x], widths=0.8, patch_artist=True, showfliers=False,
                   boxprops={"facecolor": "0.85", "edgecolor": grey},
                   medianprops={"color": grey}, whiskerprops={"color": grey},
                   capprops={"color": grey})
        ax.scatter(x + rng.uniform(-0.08, 0.08, len(ys)), ys, s=16, color="tab:blue",
                   linewidths=0, zorder=3)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.xaxis.grid(False)


def _log_axis(ax, values: pd.Series, axis: str = "x") -> None:
    """A log x (or y) axis labelled in plain numbers: decades over a wide range, 1-2-5 steps
    over a narrow one (matplotlib's default labels a narrow range with overlapping 3.4x10^1...)."""
    getattr(ax, f"set_{axis}scale")("log")
    wide = len(values) and values.max() >= 100 * values.min()
    which = getattr(ax, f"{axis}axis")
    which.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())


def _focus(ax, values: pd.Series, maximize: bool) -> None:
    """Zoom the value axis onto the better 90 % of trials when a few failures would squash
    them into a line; say how many points lie outside."""
    if len(values) < 10:
        return
    lo, hi = values.quantile(0.1), values.quantile(0.9)
    good = (lo - 0.5 * (values.max() - lo), values.max()) if maximize else (values.min(), hi + 0.5 * (hi - values.min()))
    if good[1] - good[0] <= 0 or (values.max() - values.min()) < 2 * (good[1] - good[0]):
        return
    pad = 0.05 * (good[1] - good[0])
    ax.set_ylim(good[0] - pad, good[1] + pad)
    outside = int(((values < good[0] - pad) | (values > good[1] + pad)).sum())
    if outside:
        where = "below" if maximize else "above"
        ax.text(0.99, 0.02 if maximize else 0.98, f"{outside} {where}", transform=ax.transAxes,
                ha="right", va="bottom" if maximize else "top", fontsize=8, color="0.4")


def plot_trial_curves(study, epochs: pd.DataFrame, path: Path) -> Path:
    """One line per trial, coloured by its state: a LineCollection per state, what seaborn's
    lineplot with units drew (the plot of 200 trials 0.29-0.32 -> 0.16-0.18 s)."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    plt, _ = _setup()
    metric = study.user_attrs.get("metric", "objective")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(epochs):
        present = [s for s in STATE_COLORS if s in set(epochs["state"])]
        handles = []
        for state in present:
            rows = epochs[epochs["state"] == state].sort_values(["trial", "epoch"])
            lines = [g[["epoch", "value"]].to_numpy(dtype=float) for _, g in rows.groupby("trial")]
            color = STATE_COLORS[state]
            ax.add_collection(LineCollection(lines, colors=color, alpha=0.6, linewidths=1))
            handles.append(Line2D([], [], label=state, color=color, alpha=0.6, linewidth=1))
        ax.autoscale_view()
        # where rising (maximized) curves leave room; loc="best" ignores collections
        up = study.direction.name == "MAXIMIZE"
        ax.legend(handles=handles, title="state", loc="lower right" if up else "upper right")
    ax.set(xlabel="epoch", ylabel=f"{metric} (reported each epoch)",
           title=f"{study.study_name}: learning curves by trial state")
    return _save(fig, path)


def importances(study) -> dict[str, float]:
    """Optuna's default importance evaluator (PED-ANOVA in Optuna 4+, fANOVA before)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "few trials in a regime": expected in small studies
        try:
            return optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            return {}


def plot_importance(study, imp: dict[str, float], path: Path) -> Path:
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(imp), 2) + 1.5))
    if imp:
        df = pd.DataFrame({"parameter": list(imp), "importance": list(imp.values())})
        sns.barplot(data=df, y="parameter", x="importance", ax=ax, color="tab:blue")
    else:
        ax.text(0.5, 0.5, "needs at least two complete trials with varied parameters", ha="center")
    ax.set(title=f"{study.study_name}: hyperparameter importance (Optuna, complete trials)")
    return _save(fig, path)


def _sorted_values(values) -> list:
    """Numbers in numeric order (16 before 128), anything else as text."""
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2g}"


def _binned(study, s: pd.Series, name: str, bins: int = 4) -> pd.Series:
    """An ordered categorical: the values themselves when few, else equal-width bins
    (on a log scale for log parameters)."""
    if is_categorical(study, name) or s.nunique() <= bins:
        order = [str(v) for v in _sorted_values(s.unique())]
        return pd.Categorical(s.astype(str), categories=order, ordered=True)
    log = is_log(study, name)
    values = np.log10(s.astype(float)) if log else s.astype(float)
    cut = pd.cut(values, bins=bins)
    tr = (lambda v: 10**v) if log else (lambda v: v)
    labels = [f"{_num(tr(iv.left))}-{_num(tr(iv.right))}" for iv in cut.cat.categories]
    return cut.cat.rename_categories(labels)


def plot_heatmap(study, trials: pd.DataFrame, imp: dict[str, float], path: Path) -> Path | None:
    names = [n for n in imp if n in param_columns(study, trials)][:2]
    if len(names) < 2:
        return None
    plt, sns = _setup()
    done = trials[trials["state"] == "COMPLETE"][names + ["value"]].dropna()
    a, b = names
    table = done.assign(**{a: _binned(study, done[a], a), b: _binned(study, done[b], b)})
    pivot = table.pivot_table(index=a, columns=b, values="value", aggfunc="mean", observed=False)
    fig, ax = plt.subplots(figsize=(1.4 * pivot.shape[1] + 3, 0.7 * pivot.shape[0] + 2.5))
    sns.heatmap(pivot, annot=True, fmt=".3g", cmap="viridis", ax=ax, cbar_kws={"label": "mean objective"})
    ax.grid(False)
    ax.tick_params(axis="y", rotation=0)
    ax.set(title=f"{study.study_name}: mean {study.user_attrs.get('metric', 'objective')} by {a} and {b}")
    return _save(fig, path)


def plot_study(study, trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> list[Path]:
    """Every study plot. The largest (params.png, ~45 % of the drawing time) is drawn in a
    forked process beside the others where fork is available and a second CPU is free."""
    from .forked import Forked

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _setup()  # import matplotlib and seaborn once, before the fork
    params = Forked(plot_params, study, trials, out / "params.png")
    imp = importances(study)
    paths = [
        plot_history(study, trials, out / "history.png"),
        plot_trial_curves(study, epochs, out / "curves.png"),
        plot_importance(study, imp, out / "importance.png"),
        plot_heatmap(study, trials, imp, out / "heatmap.png"),
    ]
    paths.insert(1, params.result())  # waited for last: drawn beside the others
    return [p for p in paths if p is not None]
