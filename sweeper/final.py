"""What a study hands back: the selected trial, its final model evaluated once on the test
split, and the default configuration trained the same way as the baseline to beat.

Selection: the best objective among COMPLETE trials; ties (accuracy on a few hundred
samples moves in steps of 1/n) go to the lower validation loss. The final model is the one
the trial's metrics describe: with K-fold trials the K fold models as an ensemble (their
averaged probabilities), with hold-out trials the trial's model. The baseline is the space's
fixed overrides plus the command line's, with no sampled parameter: what a user gets
without searching. Both come with a Wilson 95 % interval on test accuracy.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from .claim import trial_info

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion correct / n."""
    if n <= 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def ranking_key(trial, direction) -> tuple | None:
    """The sort key of a COMPLETE trial, smaller is better: its value (signed by the
    study's ``direction``), then the lower validation loss, then the earlier trial. None
    for a trial that is infeasible under --constraint."""
    if any(v > 0 for v in trial.constraints.values()):
        return None
    loss = trial_info(trial).get("val_loss")
    loss = float("inf") if loss is None or not math.isfinite(loss) else loss
    sign = -1.0 if direction.name == "MAXIMIZE" else 1.0
    return (sign * trial.value, loss, trial.number)


def ranked(study, n: int) -> list:
    """The ``n`` best COMPLETE, feasible trials by ranking_key, best first."""
    from optuna.trial import TrialState

    keyed = [(ranking_key(t, study.direction), t)
             for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return [t for _, t in sorted((k, t) for k, t in keyed if k is not None)][:n]


def select_best(study):
    """The best COMPLETE (and feasible) trial by ranking_key; None when no trial completed."""
    best = ranked(study, 1)
    return best[0] if best else None


def train_final(overrides: list[str], cv: int, out: Path) -> None:
    """Train a configuration the way the study's trials were (K folds, or hold-out) into
    ``out``, without touching the test split."""
    from app.compose import compose_experiment

    _, cfg = compose_experiment(overrides)
    if cv > 1:
        from core.crossval import run_cv

        run_cv(cfg, cv, out_dir=out, evaluate_test=False)
    else:
        from core.experiment import run

        run(cfg, out_dir=out, evaluate_test=False)


def test_metrics(run_dir: Path) -> dict[str, Any]:
    """The final model of a trial folder on the test split, evaluated once: the fold
    ensemble (model_fold<i>.npz) or the single model (model.npz)."""
    from core.final_model import evaluate_ensemble, fold_ensemble

    if any(run_dir.glob("model_fold*.npz")):
        predictor = fold_ensemble(run_dir)
        kind = f"ensemble of {len(predictor.members)} fold models"
    else:
        from core.predict import load_predictor

        predictor = load_predictor([run_dir / "model.npz"])
        kind = "single model"
    scores = evaluate_ensemble(predictor)  # one member: just that model's scores
    n = scores.pop("n_test")
    out = {**scores, "n_test": n, "final_model": kind}
    acc = scores["test_accuracy"]
    if acc is not None and math.isfinite(acc):
        out["test_accuracy_ci95"] = list(wilson(round(acc * n), n))
    return out


def _copy_run(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and (path.suffix in (".npz", ".csv") or path.name == "summary.json"):
            shutil.copy2(path, dst / path.name)


def final_model(best, study_dir: Path, cv: int) -> dict[str, Any]:
    """best/: the selected trial's model(s), evaluated on the test split. A trial folder that
    is gone (deleted by hand) is rebuilt from the trial's overrides (training is
    deterministic for a seed), and the summary says so."""
    info = trial_info(best)
    best_dir = study_dir / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    run_dir = Path(info.get("dir") or "")
    has_model = run_dir.is_dir() and (any(run_dir.glob("model_fold*.npz")) or (run_dir / "model.npz").exists())
    if has_model:
        _copy_run(run_dir, best_dir)
        note = None
    else:
        train_final(info["overrides"], cv, best_dir)
        note = f"trial folder {run_dir} was missing: retrained from the trial's overrides"
    out = test_metrics(best_dir)
    if note:
        out["note"] = note
    return out


def baseline(overrides: list[str], study_dir: Path, cv: int) -> dict[str, Any]:
    """The default configuration, trained like the trials into baseline/ (once: reused while
    its composed config is unchanged) and evaluated on the test split."""
    from app.compose import compose_experiment
    from core.experiment import config_dict, json_safe

    out = study_dir / "baseline"
    _, cfg = compose_experiment(overrides)
    saved = out / "summary.json"
    fresh = True
    if saved.exists():
        try:
            old = json.loads(saved.read_text())
            same = old.get("config") == json.loads(json.dumps(json_safe(config_dict(cfg))))
            fresh = not same or old.get("cv_folds", 1) != cv
        except ValueError:
            fresh = True
    if fresh:
        if out.exists():
            shutil.rmtree(out)
        train_final(overrides, cv, out)
    return {"overrides": overrides, **test_metrics(out)}
