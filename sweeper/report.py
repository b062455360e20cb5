"""Study results as pandas tables, rebuilt from the storage so they never disagree with it.

  trials.csv    one row per trial: number, state, every param, objective, best epoch,
                epochs run, pruned-at epoch, seconds, fail reason, ...
  epochs.csv    long table: trial, epoch, reported value, state (+ the run's metrics.csv)
  best/         the best trial's checkpoint, evaluated once on the held-out test split
  summary.json  best params, validation and test metrics
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from core.experiment import json_safe

from .claim import trial_info, trial_state

ATTRS = ("best_epoch", "epochs_run", "pruned_at", "stop_reason", "fail_reason", "train_seconds",
         "val_loss", "val_accuracy", "train_loss", "train_accuracy", "n_params", "retry_of",
         "worker", "dir")


def trials_frame(study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        # values[0]: the value (the first objective of a multi-objective study)
        first = t.values[0] if t.values else None
        row = {"number": t.number, "state": trial_state(t), "value": first}
        for name, value in t.params.items():
            row[name] = value
        info = trial_info(t)
        for key in ATTRS:
            row[key] = info.get(key)
        start, end = t.datetime_start, t.datetime_complete
        row["seconds"] = (end - start).total_seconds() if start and end else None
        row["datetime_start"] = start
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["number", "state", "value", *ATTRS, "seconds"])
    for name in _int_params(study):  # 16, not 16.0, where a trial lacks the param (NaN)
        if name in df:
            df[name] = df[name].astype("Int64")
    return df.sort_values("number").reset_index(drop=True)


def _int_params(study) -> set[str]:
    """Parameters whose every value is an integer (IntDistribution, or integer choices)."""
    names: dict[str, bool] = {}
    for t in study.get_trials(deepcopy=False):
        for name, value in t.params.items():
            names[name] = names.get(name, True) and isinstance(value, int) and not isinstance(value, bool)
    return {name for name, ok in names.items() if ok}


def epochs_frame(study) -> pd.DataFrame:
    frames = []
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        df = pd.DataFrame(
            {"trial": t.number, "epoch": list(t.intermediate_values), "value": list(t.intermediate_values.values())}
        )
        df["state"] = trial_state(t)
        run_dir = trial_info(t).get("dir")
        metrics = Path(run_dir) / "metrics.csv" if run_dir else None
        if metrics is not None and metrics.exists():
            df = df.merge(pd.read_csv(metrics).drop(columns=["seconds"], errors="ignore"), on="epoch", how="left")
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["trial", "epoch", "value", "state"])
    return pd.concat(frames, ignore_index=True)


HOLDOUT_SELECTION = "best value among complete trials, ties to the lower val_loss"


def evaluate_best(study, study_dir: Path, *, with_baseline: bool = True) -> dict | None:
    """Select the best trial, put its final model in best/ and evaluate it once on the test
    split, next to the baseline (sweeper.final). With finalists (sweeper.finalists) the
    pick is the best finalist, its model the fold ensemble, the baseline trained with the
    same folds."""
    from .final import baseline, final_model, select_best

    best = select_best(study)
    if best is None:
        return None
    cv = int(study.user_attrs.get("cv", 1))
    chosen, extra = best, {"selection": HOLDOUT_SELECTION}
    if study.user_attrs.get("finalists"):
        chosen, best, cv, extra = _finalist_pick(study, best, cv)
    info = trial_info(chosen)
    summary = {
        "study": study.study_name,
        "best_trial": best.number,
        "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("metric"),
        "value": chosen.value,
        "cv_folds": cv,
        **extra,
        "params": best.params,
        "overrides": info.get("overrides"),
        "best_epoch": info.get("best_epoch"),
        "val_loss": info.get("val_loss"),
        "val_accuracy": info.get("val_accuracy"),
        **final_model(chosen, study_dir, cv),
    }
    summary["run_command"] = write_config(info.get("overrides") or [], study_dir / "best")
    defaults = study.user_attrs.get("baseline_overrides")
    if with_baseline and defaults is not None:
        summary["baseline"] = baseline(defaults, study_dir, cv)
    text = json.dumps(json_safe(summary), indent=2, default=str)
    (study_dir / "best" / "test_metrics.json").write_text(text)
    (study_dir / "summary.json").write_text(text)
    return summary


def _finalist_pick(study, best, cv: int):
    """(chosen trial, its source trial in ``study``, folds, summary keys) for a study with
    finalists: the best finalist, or the hold-out pick with a note when none completed."""
    from .final import select_best
    from .finalists import SOURCE, load_finalists

    n, folds = int(study.user_attrs["finalists"]), int(study.user_attrs["finalist_folds"])
    fstudy = load_finalists(study)
    pick = select_best(fstudy) if fstudy is not None else None
    if pick is None:
        return best, best, cv, {
            "selection": HOLDOUT_SELECTION,
            "note": f"no finalist completed yet ({n} asked): the pick is the best hold-out trial; "
                    "run the same command to train the finalists"}
    source = {t.number: t for t in study.get_trials(deepcopy=False)}[pick.user_attrs[SOURCE]]
    done = sum(t.state.name == "COMPLETE" for t in fstudy.get_trials(deepcopy=False))
    return pick, source, folds, {
        "selection": f"the {n} best trials on the validation split (ties to the lower val_loss) "
                     f"trained again with {folds}-fold CV: the best fold mean, ties to the "
                     "lower val_loss",
        "finalists": done,
        "finalist_trial": pick.number,
        "holdout_value": source.value,
    }


def write_config(overrides: list[str], out: Path) -> str:
    """out/config.yaml, the full composed config of these overrides; returns the run.py
    command line that trains it."""
    import shlex

    from omegaconf import OmegaConf

    from app.compose import compose_experiment

    cfg, _ = compose_experiment(overrides)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    return "python run.py " + " ".join(shlex.quote(o) for o in overrides)


def write_report(study, study_dir: Path, *, plots: bool = True) -> dict:
    """Tables, plots and the best model's test evaluation; returns the summary.

    The tables and plots (~2 s for 200 trials) are made in a forked process while this one
    evaluates the best model and trains the baseline (0.1-2.5 s), where fork is available
    and a second CPU is free; matplotlib and seaborn (~1 s to import) are imported before the
    fork, as the evaluation does not need them and the child then draws at once. A
    multi-objective study's report runs in order: pareto.png marks the baseline's values."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    if len(study.directions) > 1:
        return _front_report(study, study_dir, plots)
    from .forked import Forked

    if plots:  # imported here, before the fork: the child draws at once (~1 s earlier)
        import_plotting()
    tables = Forked(_write_tables_of, _contents(study), study_dir, plots)
    summary = evaluate_best(study, study_dir) or {}
    drawn = tables.result()
    if plots:
        summary["plots"] = drawn
    return summary


def import_plotting() -> None:
    """Import and theme matplotlib and seaborn (~1 s), which the report's plots need: done
    before its fork, or earlier where a CPU is idle (search.py)."""
    from .plots import _setup

    _setup()


def write_tables(study, study_dir: Path, plots: bool, finalists: dict | None = None) -> list[str]:
    """trials.csv, epochs.csv and (with ``plots``) plots/*.png; returns the plots' paths.
    ``finalists`` (sweeper.finalists.finalist_values; default: read from the storage) fills
    trials.csv's ``finalist_value`` column."""
    trials, epochs = _tables(study, study_dir, finalists)
    if not plots:
        return []
    from .plots import plot_study

    return [str(p) for p in plot_study(study, trials, epochs, study_dir / "plots")]


def _tables(study, study_dir: Path, finalists: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.csv and epochs.csv, written and returned."""
    from .finalists import finalist_values

    trials = trials_frame(study)
    epochs = epochs_frame(study)
    finalists = finalist_values(study) if finalists is None else finalists
    if finalists:  # the K-fold mean of the trials trained again as finalists
        trials["finalist_value"] = trials["number"].map(finalists)
    several, constrained = len(study.directions) > 1, bool(study.user_attrs.get("constraints"))
    if several or constrained:  # sweeper.pareto: objective, feasible and pareto columns
        from .pareto import goal_epochs, goal_frame

        trials = goal_frame(study, trials)
        epochs = goal_epochs(study, epochs) if several else epochs
    trials.to_csv(study_dir / "trials.csv", index=False)
    epochs.to_csv(study_dir / "epochs.csv", index=False)
    return trials, epochs


def _front_report(study, study_dir: Path, plots: bool) -> dict:
    """A multi-objective study: tables, the Pareto front evaluated on test, its plots."""
    from .pareto import evaluate_front
    from .pareto_plots import plot_goals

    trials, epochs = _tables(study, study_dir)
    summary = evaluate_front(study, study_dir)
    if plots:
        base = (summary.get("baseline") or {}).get("values")
        paths = plot_goals(study, trials, epochs, study_dir / "plots", base)
        summary["plots"] = [str(p) for p in paths]
    return summary


def _contents(study) -> tuple:
    """What the tables and plots read of a study, read here: a forked child must not use
    the parent's storage (a database connection shared across fork corrupts both sides)."""
    from .finalists import finalist_values

    return (study.study_name, study.directions, study.user_attrs, study.get_trials(deepcopy=False),
            finalist_values(study))


def _write_tables_of(contents: tuple, study_dir: Path, plots: bool) -> list[str]:
    """write_tables on an in-memory copy of the study (see _contents)."""
    import optuna

    name, directions, attrs, trials, finalists = contents
    copy = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name=name,
                               directions=directions)
    for key, value in attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(trials)
    return write_tables(copy, study_dir, plots, finalists)
