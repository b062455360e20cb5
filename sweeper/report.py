"""Study results as pandas tables, rebuilt from the storage so they never disagree with it.

  trials.csv    one row per trial: number, state, every param, objective, best epoch,
                epochs run, pruned-at epoch, seconds, fail reason, ...
  epochs.csv    long table: trial, epoch, reported value, state (+ the run's metrics.csv)
  best/         the best trial's checkpoint, evaluated once on the held-out test split
  summary.json  best params, validation and test metrics
"""

from __future__ import annotations

import json
import shutil
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
        row = {"number": t.number, "state": trial_state(t), "value": t.value}
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
    return df.sort_values("number").reset_index(drop=True)


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


def evaluate_best(study, study_dir: Path) -> dict | None:
    """Copy the best trial's model to best/ and evaluate it once on the test split."""
    from core.engines.base import accuracy
    from core.experiment import targets
    from core.functional import loss_value
    from core.network import predict_logits
    from core.predict import load_predictor

    try:
        best = study.best_trial
    except ValueError:
        return None
    info = trial_info(best)
    run_dir = Path(info.get("dir", ""))
    best_dir = study_dir / "best"
    summary = {
        "study": study.study_name,
        "best_trial": best.number,
        "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("metric"),
        "value": best.value,
        "params": best.params,
        "overrides": info.get("overrides"),
        "best_epoch": info.get("best_epoch"),
        "val_loss": info.get("val_loss"),
        "val_accuracy": info.get("val_accuracy"),
    }
    model = run_dir / "model.npz"
    if model.exists():
        predictor = load_predictor([model])
        ckpt = predictor.members[0]
        ds = predictor.load_data()  # rebuilt from its config, checked against its normalization
        T = targets(ds.test.y, ckpt.spec.loss, ckpt.spec.n_out, ckpt.params.dtype)
        logits = predict_logits(ckpt.params, ckpt.spec, ds.test.X)
        summary["test_loss"] = loss_value(ckpt.spec.loss, logits, T)
        summary["test_accuracy"] = accuracy(ckpt.spec.loss, logits, T)
        summary["n_test"] = len(ds.test.X)
        best_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, best_dir / "model.npz")
        for name in ("metrics.csv", "summary.json"):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, best_dir / name)
    text = json.dumps(json_safe(summary), indent=2, default=str)
    if best_dir.exists():
        (best_dir / "test_metrics.json").write_text(text)
    (study_dir / "summary.json").write_text(text)
    return summary


def write_report(study, study_dir: Path, *, plots: bool = True) -> dict:
    """Tables, plots and the best model's test evaluation; returns the summary."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(study)
    epochs = epochs_frame(study)
    trials.to_csv(study_dir / "trials.csv", index=False)
    epochs.to_csv(study_dir / "epochs.csv", index=False)
    summary = evaluate_best(study, study_dir) or {}
    if plots:
        from .plots import plot_study

        summary["plots"] = [str(p) for p in plot_study(study, trials, epochs, study_dir / "plots")]
    return summary
