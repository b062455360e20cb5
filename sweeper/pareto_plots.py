"""Seaborn plots of a multi-objective study: the Pareto front, and sweeper.plots' history,
parameter and importance plots once per objective.

pareto.png: the first objective against each other one (one panel per other objective);
every complete trial, the front highlighted and joined by its staircase (two objectives),
infeasible trials marked with a red x, the baseline (the space's default configuration) as
a star. Sizes and latencies are drawn on a log axis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .objectives import Goal
from .pareto import study_goals
from .plots import (
    _focus,
    _log_axis,
    _save,
    _setup,
    plot_history,
    plot_importance,
    plot_params,
    plot_trial_curves,
)

LOG_GOALS = ("n_params", "latency_us", "latency_us_b256", "train_seconds")


class GoalView:
    """A study seen through one of its goals: what sweeper.plots reads (direction, the
    metric's name) for that goal; everything else is the study's."""

    def __init__(self, study, goal: Goal) -> None:
        self._study, self._goal = study, goal

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    @property
    def direction(self):
        from optuna.study import StudyDirection

        return StudyDirection.MAXIMIZE if self._goal.maximize else StudyDirection.MINIMIZE

    @property
    def study_name(self) -> str:  # the plots' titles name the objective
        return f"{self._study.study_name} [{self._goal.name}]"

    @property
    def user_attrs(self) -> dict:
        return {**self._study.user_attrs, "metric": self._goal.name}


def _importances(study, i: int) -> dict[str, float]:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return optuna.importance.get_param_importances(study, target=lambda t: t.values[i])
        except (ValueError, RuntimeError, ZeroDivisionError):
            return {}


def plot_goals(study, trials: pd.DataFrame, epochs: pd.DataFrame, out: Path,
               baseline: dict | None = None) -> list[Path]:
    """pareto.png, curves.png (the first objective), and history_<goal>.png,
    params_<goal>.png, importance_<goal>.png per goal."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    goals = study_goals(study)
    paths = [plot_pareto(study, trials, out / "pareto.png", baseline=baseline),
             plot_trial_curves(GoalView(study, goals[0]), epochs, out / "curves.png")]
    for i, g in enumerate(goals):
        view = GoalView(study, g)
        # another objective than the first has no per-epoch report: complete trials only
        complete = trials["state"] == "COMPLETE"
        frame = trials.assign(value=trials[g.name].where(complete)) if i else trials
        log = g.name in LOG_GOALS
        paths.append(plot_history(view, frame, out / f"history_{g.name}.png", ylog=log))
        paths.append(plot_params(view, frame, out / f"params_{g.name}.png", ylog=log))
        imp = _importances(study, i)
        paths.append(plot_importance(view, imp, out / f"importance_{g.name}.png"))
    return paths


def plot_pareto(study, trials: pd.DataFrame, path: Path, *, baseline: dict | None = None) -> Path:
    plt, sns = _setup()
    goals = study_goals(study)
    first, others = goals[0], goals[1:]
    done = trials[trials["state"] == "COMPLETE"].copy()
    feasible = (done["feasible"].astype(bool) if "feasible" in done
                else pd.Series(True, index=done.index))
    front = done[done["pareto"].astype(bool)] if "pareto" in done else done.iloc[:0]
    fig, axes = plt.subplots(1, len(others), figsize=(8.5 * len(others), 5.5), squeeze=False)
    for ax, other in zip(axes.flat, others):
        ok = done[feasible & ~done["number"].isin(front["number"])]
        if len(ok):
            sns.scatterplot(data=ok, x=other.name, y=first.name, ax=ax, color="tab:blue",
                            alpha=0.45, s=28, edgecolor="none", label=f"trial ({len(ok)})")
        bad = done[~feasible]
        if len(bad):
            sns.scatterplot(data=bad, x=other.name, y=first.name, ax=ax, color="tab:red",
                            marker="X", s=40, label=f"infeasible ({len(bad)})")
        if len(front):
            sns.scatterplot(data=front, x=other.name, y=first.name, ax=ax, color="tab:orange",
                            s=70, edgecolor="black", linewidth=0.8, zorder=5,
                            label=f"Pareto front ({len(front)})")
            if len(others) == 1:
                _staircase(ax, front, other, first)
                _label_front(ax, front, other, first)
                _front_table(ax, front, other, first)
        if baseline and other.name in baseline and first.name in baseline:
            ax.scatter([baseline[other.name]], [baseline[first.name]], marker="*", s=260,
                       color="tab:green", edgecolor="black", zorder=6,
                       label="baseline (default config)")
        values = done[other.name].dropna().astype(float)
        if baseline and other.name in baseline:
            values = pd.concat([values, pd.Series([float(baseline[other.name])])])
        # sizes always on a log axis; times when they span a decade
        wide = len(values) and values.min() > 0 and values.max() >= 10 * values.min()
        positive = len(values) and values.min() > 0
        if other.name in LOG_GOALS and positive and (other.name == "n_params" or wide):
            _log_axis(ax, values)
        _focus(ax, done[first.name].dropna(), first.maximize)
        ax.set(xlabel=f"{other.name} ({_better(other)})",
               ylabel=f"{first.name} ({_better(first)})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    n_pruned = int((trials["state"] == "PRUNED").sum())
    bounds = study.user_attrs.get("constraints") or []
    fig.suptitle(f"{study.study_name}: Pareto front of {len(done)} complete trials"
                 + (f" ({n_pruned} pruned, not shown)" if n_pruned else "")
                 + (f"\nconstraints: {', '.join(bounds)}" if bounds else ""))
    fig.tight_layout()
    return _save(fig, path)


def _better(goal: Goal) -> str:
    return "higher is better" if goal.maximize else "lower is better"


def _staircase(ax, front: pd.DataFrame, x: Goal, y: Goal) -> None:
    """The region the front dominates, as the staircase through its points."""
    pts = front.sort_values(x.name, ascending=not x.maximize)[[x.name, y.name]].to_numpy(float)
    ax.step(pts[:, 0], pts[:, 1], where="post", color="tab:orange", linewidth=1.2, zorder=4)


def _front_table(ax, front: pd.DataFrame, x: Goal, y: Goal, limit: int = 24) -> None:
    """The front as a small table right of the axes, below the legend: trial, x, y."""
    pts = front.sort_values([x.name, "number"])
    lines = [f"{'trial':>6} {x.name:>10} {y.name:>12}"]
    for _, row in pts.head(limit).iterrows():
        trial = f"#{int(row['number'])}"
        lines.append(f"{trial:>6} {_num(row[x.name]):>10} {_num(row[y.name]):>12}")
    if len(pts) > limit:
        lines.append(f"... {len(pts) - limit} more in summary.json")
    ax.text(1.03, 0.70, "\n".join(lines), transform=ax.transAxes, va="top", ha="left",
            family="monospace", fontsize=7.5, color="0.2")


def _num(v) -> str:
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}"


def _label_front(ax, front: pd.DataFrame, x: Goal, y: Goal, limit: int = 8) -> None:
    """Trial numbers beside the front's points (alternately above and below the line);
    a longer front is named in the table beside the axes only."""
    pts = front.sort_values([x.name, "number"])
    if len(pts) > limit:
        return
    groups = pts.groupby([x.name, y.name], sort=False)["number"]  # trials with the same values
    for k, ((xv, yv), numbers) in enumerate(groups):
        dy = 7 if k % 2 == 0 else -12
        ax.annotate(", ".join(f"#{int(n)}" for n in numbers), (xv, yv), xytext=(4, dy),
                    textcoords="offset points", fontsize=7, color="0.25", zorder=7)

