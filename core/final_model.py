"""The final model of a cross-validated configuration, built two ways.

(a) ``fold_ensemble``: the K fold models written by core.crossval.run_cv, their outputs
    averaged; each member standardizes raw features as its fold did
    (core.predict.Predictor.scores_raw).
(b) ``refit``: one network trained on all of train+val, standardized on train+val, for the
    mean curve's best epoch count (run_cv's ``refit_epochs``), without early stopping and
    with the cross-validation's lr schedule (plateau's recorded lrs replayed). Its
    model.npz is an ordinary checkpoint with ``meta["standardized_on"] = "train+val"``.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import checkpoint as C
from .config import ConfigError, ExperimentConfig
from .data import raw_test_split, refit_data
from .engines import make_engine, resolve_engine
from .experiment import (
    blas_limit,
    build,
    checkpoint_of,
    evaluate_splits,
    make_summary,
    split_targets,
    write_run_files,
)
from .predict import Predictor, data_config, ensemble_metrics, load_predictor
from .trainer import Callback, Fold, fit_folds

__all__ = ["evaluate_ensemble", "fold_ensemble", "refit", "refit_from_summary"]


def fold_ensemble(out_dir: str | Path) -> Predictor:
    """The fold models model_fold<i>.npz of a run_cv folder, in fold order, as one Predictor."""
    paths = sorted(Path(out_dir).glob("model_fold*.npz"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem) or -1))
    if not paths:
        raise C.CheckpointError(f"checkpoint: no model_fold<i>.npz in '{out_dir}'")
    return load_predictor(paths)


def evaluate_ensemble(predictor: Predictor) -> dict[str, float]:
    """test_loss, test_accuracy and n_test of the averaged members on the test split of
    their data."""
    ckpt = predictor.members[0]
    data = data_config(ckpt, predictor.path)
    X_raw, y = raw_test_split(data, dtype=str(ckpt.params.dtype))
    loss, acc = ensemble_metrics(predictor, X_raw, y)
    return {"test_loss": loss, "test_accuracy": acc, "n_test": len(y)}


def refit(
    cfg: ExperimentConfig,
    epochs: int,
    *,
    base_lrs: list[float] | None = None,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    out_dir: str | Path | None = None,
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` on train+val for ``epochs`` epochs; return run's summary keys (val NaN).

    The lr schedule is the configured one over trainer.epochs (cut short after ``epochs``),
    so the refit sees the same lrs as the cross-validation's first ``epochs`` epochs;
    ``base_lrs`` replays a plateau schedule's.
    """
    if not 1 <= epochs <= cfg.trainer.epochs:
        raise ConfigError(f"refit epochs: {epochs} is out of range; allowed: 1 <= epochs <= "
                          f"trainer.epochs ({cfg.trainer.epochs})")
    start = time.perf_counter()
    engine_name = resolve_engine(cfg.engine.name)
    dtype = cfg.trainer.dtype
    ds = refit_data(cfg.data, dtype)
    es = replace(cfg.trainer.early_stopping, enabled=False)  # no val split to stop on
    run_cfg = replace(cfg, trainer=replace(cfg.trainer, early_stopping=es))
    spec, params = build(run_cfg, ds)
    T = split_targets(ds, spec, dtype)

    def stop(row: dict) -> str | None:
        return "refit_epochs" if row["epoch"] >= epochs else None

    with blas_limit(cfg, spec):
        engine = make_engine(run_cfg, spec, params)
        try:
            fold = Fold(engine, ds.train.X, T["train"], ds.val.X, T["val"], seed=cfg.trainer.seed)
            result = fit_folds([fold], run_cfg, [*callbacks, stop], base_lrs=base_lrs)
            final = evaluate_splits(engine, ds, T, evaluate_test=evaluate_test)
            final_params = engine.get_params()
        finally:
            engine.close()
    seconds = time.perf_counter() - start
    summary = make_summary(run_cfg, result, final, engine_name, spec.n_params, ds, seconds)
    summary["refit_epochs"] = epochs
    if out_dir is not None:
        out = Path(out_dir)
        write_run_files(out, run_cfg, result, summary)
        ckpt = checkpoint_of(final_params, spec, ds, run_cfg, standardized_on="train+val")
        C.save(out / "model.npz", ckpt)
    return summary


def refit_from_summary(cfg: ExperimentConfig, summary: dict, **kwargs: Any) -> dict[str, Any]:
    """``refit`` for the epochs (and plateau lrs) a run_cv summary recorded."""
    return refit(cfg, int(summary["refit_epochs"]), base_lrs=summary.get("refit_base_lrs"),
                 **kwargs)
