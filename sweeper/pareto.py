"""What a multi-objective (or constrained) study hands back.

  trials.csv    sweeper.report's table, plus one column per objective (latency_us and
                latency_us_b256 when measured), ``feasible`` (constraints) and ``pareto``
  summary.json  the Pareto-optimal trials (complete, feasible, no other trial at least as
                good in every objective and better in one), best first objective first, each
                with its values, parameters, run.py line and its final model evaluated once
                on the test split (pareto/<trial>/: config.yaml, test_metrics.json); and the
                baseline (the space's default configuration) trained the same way
  plots/        pareto.png, and the single-objective plots once per objective

A constrained single-objective study keeps sweeper.report's best/ and summary, with the
selection among feasible trials only; its trials.csv gains ``feasible``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from core.experiment import json_safe

from .claim import trial_info
from .objectives import LATENCY, Goal, is_feasible, pareto_trials, parse_goals


def study_goals(study) -> tuple[Goal, ...]:
    """The goals a study was run with, from its stored metric and its directions."""
    spec = study.user_attrs.get("metric") or "value"
    directions = [d.name.lower() for d in study.directions]
    if len(directions) == 1:
        return (Goal(spec, directions[0]),)
    names = [g.name for g in parse_goals(spec, "metric")]
    return tuple(Goal(n, d) for n, d in zip(names, directions))


def is_constrained(study) -> bool:
    return bool(study.user_attrs.get("constraints"))


def goal_frame(study, trials: pd.DataFrame) -> pd.DataFrame:
    """trials (sweeper.report.trials_frame) with latency, feasible and pareto columns; the
    objective columns hold Optuna's values for COMPLETE trials."""
    goals = study_goals(study)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    df = trials.copy()
    if df.empty:
        return df
    measured = [n for n in LATENCY if any(n in trial_info(t) for t in by_number.values())]
    for name in measured:
        df[name] = [trial_info(by_number[n]).get(name) for n in df["number"]]
    if len(goals) > 1:
        for i, g in enumerate(goals):
            df[g.name] = [_value(by_number[n], i, df.at[k, g.name] if g.name in df else None)
                          for k, n in zip(df.index, df["number"])]
    if "n_params" in df:  # 4833, not 4833.0
        df["n_params"] = pd.to_numeric(df["n_params"]).round().astype("Int64")
    if is_constrained(study):
        df["feasible"] = [is_feasible(t) if t.state.name == "COMPLETE" else None
                          for t in (by_number[n] for n in df["number"])]
    if len(goals) > 1:
        front = {t.number for t in pareto_trials(study)}
        df["pareto"] = df["number"].isin(front)
    return df


def goal_epochs(study, epochs: pd.DataFrame) -> pd.DataFrame:
    """epochs (sweeper.report.epochs_frame) plus the curves of stopped multi-objective
    trials, which live in their metrics.csv only (sweeper.objectives.GoalObjective)."""
    from .claim import trial_state

    metric = study_goals(study)[0].name
    frames = [epochs]
    for t in study.get_trials(deepcopy=False):
        run_dir = trial_info(t).get("dir")
        path = Path(run_dir) / "metrics.csv" if run_dir else None
        if t.intermediate_values or t.state.name != "PRUNED" or not path or not path.exists():
            continue
        rows = pd.read_csv(path).drop(columns=["seconds"], errors="ignore")
        rows.insert(0, "trial", t.number)
        rows.insert(2, "value", rows[metric])
        rows.insert(3, "state", trial_state(t))
        frames.append(rows)
    frames = [f for f in frames if len(f)]
    if len(frames) < 2:
        return epochs
    return pd.concat(frames, ignore_index=True).sort_values(["trial", "epoch"], ignore_index=True)


def _value(trial, i: int, fallback):
    if trial.values is not None:
        return trial.values[i]
    return fallback if trial.state.name != "COMPLETE" else None


def evaluate_front(study, study_dir: Path, *, with_baseline: bool = True) -> dict:
    """summary.json of a multi-objective study: the front, each member tested once."""
    from .final import baseline, test_metrics, train_final
    from .report import write_config

    goals = study_goals(study)
    cv = int(study.user_attrs.get("cv", 1))
    sign = [1.0 if g.maximize else -1.0 for g in goals]
    front = sorted(pareto_trials(study), key=lambda t: (-sign[0] * t.values[0], t.number))
    members = []
    for t in front:
        info = trial_info(t)
        out = study_dir / "pareto" / f"{t.number:04d}"
        run_dir = Path(info.get("dir") or "")
        has_model = run_dir.is_dir() and (any(run_dir.glob("model_fold*.npz"))
                                          or (run_dir / "model.npz").exists())
        if not has_model:
            train_final(info["overrides"], cv, out)
            run_dir = out
        test = test_metrics(run_dir)
        member = {
            "trial": t.number,
            "values": {g.name: v for g, v in zip(goals, t.values)},
            "params": t.params,
            "overrides": info.get("overrides"),
            "dir": str(run_dir),
            "val_loss": info.get("val_loss"),
            "val_accuracy": info.get("val_accuracy"),
            "n_params": info.get("n_params"),
            **test,
            # what the tested model holds: K fold networks with K-fold trials
            "final_model_n_params": (info.get("n_params") or 0)
            * max(1, len(list(run_dir.glob("model_fold*.npz")))),
            "run_command": write_config(info.get("overrides") or [], out),
        }
        if not has_model:
            member["note"] = "trial folder was missing: retrained from the trial's overrides"
        text = json.dumps(json_safe(member), indent=2, default=str)
        (out / "test_metrics.json").write_text(text)
        members.append(member)
    summary = {
        "study": study.study_name,
        "metric": study.user_attrs.get("metric"),
        "objectives": [g.text() for g in goals],
        "constraints": study.user_attrs.get("constraints") or [],
        "cv_folds": cv,
        "selection": "Pareto front of the complete, feasible trials; each member's final model "
                     "evaluated once on test",
        "n_pareto": len(members),
        "pareto": members,
        "final_model_size": (f"ensemble of {cv} fold models: {cv} x n_params" if cv > 1
                             else "one network: n_params"),
    }
    defaults = study.user_attrs.get("baseline_overrides")
    if with_baseline and defaults is not None and members:
        base = baseline(defaults, study_dir, cv)
        saved = json.loads((study_dir / "baseline" / "summary.json").read_text())
        base["values"] = {g.name: saved.get(g.name) for g in goals if g.name in saved}
        summary["baseline"] = base
    (study_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, default=str))
    return summary


def front_table(summary: dict) -> str:
    """The front as text lines: trial, each objective, test accuracy."""
    members = summary.get("pareto") or []
    if not members:
        return "no feasible complete trial: no Pareto front (see trials.csv)"
    names = list(members[0]["values"])
    head = ["trial", *names, "test_accuracy"]
    rows = [[f"#{m['trial']}", *(_cell(m["values"][n]) for n in names),
             _cell(m.get("test_accuracy"))] for m in members]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{int(v):,}" if isinstance(v, (int, float)) else str(v)
