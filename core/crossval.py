"""K-fold cross-validation: stratified folds of train+val, trained in lockstep.

The non-test samples (train + val of core.data's three-way split) are cut into K folds; fold
i trains on the other K-1 folds, standardized on them only, and is validated on fold i. The
test split is in no fold. ``run_cv`` trains the K networks in lockstep
(core.trainer.fit_folds: the fold means drive early stopping, the plateau scheduler and the
callbacks) and writes into ``out_dir``:
  metrics.csv           one row per epoch: fold means, plus val_loss_fold<i>, val_accuracy_fold<i>
  summary.json          run's keys (val_* = fold means), cv_folds, per-fold metrics, refit_*
  model_fold<i>.npz     fold i's network, standardized on its training part (core.checkpoint)
The final model built from a cross-validation is in core.final_model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as C
from .config import ConfigError, DataConfig, ExperimentConfig, check_range
from .data import Dataset, make_dataset, pool_parts
from .engines import make_engine, resolve_engine
from .experiment import (
    blas_limit,
    build,
    cached_data,
    checkpoint_of,
    make_summary,
    split_targets,
    write_run_files,
)
from .predict import Predictor, ensemble_metrics
from .trainer import Callback, Fold, fit_folds

__all__ = [
    "CVData",
    "cv_data",
    "fold_indices",
    "fold_seed",
    "run_cv",
]

# data.seed's random streams: generator [seed], three-way split [seed, 1], folds [seed, 2]
FOLD_STREAM = 2


def fold_indices(
    n: int, k: int, rng: np.random.Generator, *, strata: np.ndarray | None = None
) -> list[np.ndarray]:
    """K disjoint sorted index arrays covering range(n), stratified by ``strata``.

    Each class is shuffled, the classes are laid end to end and dealt out to the folds in
    turn, so every fold holds floor or ceil of (class size / k) of each class and the fold
    sizes differ by at most 1.
    """
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(strata == c)) for c in np.unique(strata)]
    )  # (n,) class by class
    which = rng.permutation(k)[np.arange(n) % k]  # fold of each position in order
    return [np.sort(order[which == i]) for i in range(k)]


@dataclass
class CVData:
    folds: list[Dataset]  # fold i: train = the other folds, val = fold i, test empty
    held_out: list[np.ndarray]  # fold i's validation samples: indices into the raw data
    test_index: np.ndarray  # the test split's indices into the raw data (in no fold)
    test_X_raw: np.ndarray  # (n_test, n_features) raw units: for the final model only
    test_y: np.ndarray  # (n_test,) class index or (n_test, n_targets)


def check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"cv.k: expected a whole number of folds, got {k!r}")
    check_range("cv.k", k, low=2, high=n)


def cv_data(cfg: DataConfig, k: int, dtype: str = "float32") -> CVData:
    """The K fold datasets of ``cfg``'s train+val (deterministic in data.seed and k)."""
    raw, pool, test = pool_parts(cfg, dtype)
    check_k(k, len(pool))
    strata = None if raw.strata is None else raw.strata[pool]
    rng = np.random.default_rng([cfg.seed, FOLD_STREAM])
    folds = fold_indices(len(pool), k, rng, strata=strata)
    none = test[:0]
    datasets = [
        make_dataset(
            raw,
            (pool[np.concatenate(folds[:i] + folds[i + 1 :])], pool[held_out], none),
            standardize=cfg.standardize,
            dtype=dtype,
        )
        for i, held_out in enumerate(folds)
    ]
    return CVData(datasets, [pool[f] for f in folds], test, raw.X[test], raw.y[test])


def fold_seed(seed: int, fold: int) -> int:
    """Fold ``fold``'s trainer seed (init, batch order, dropout), derived from trainer.seed."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def with_seed(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    return replace(cfg, trainer=replace(cfg.trainer, seed=seed))


def run_cv(
    cfg: ExperimentConfig,
    k: int,
    *,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    out_dir: str | Path | None = None,
    evaluate_test: bool = False,
) -> dict[str, Any]:
    """K-fold cross-validate ``cfg``; return the summary (also written to out_dir).

    The summary has run's keys, with train_*/val_* the fold means of the fold models (their
    best epoch's when early stopping restores it) and test_* those of the fold ensemble
    (NaN unless ``evaluate_test``); plus cv_folds, fold_seeds, val_loss_fold<i>,
    val_accuracy_fold<i>, and for the refit final model refit_epochs (the mean curve's best
    epoch) and, with scheduler=plateau, refit_base_lrs.
    """
    start = time.perf_counter()
    engine_name = resolve_engine(cfg.engine.name)  # fail before loading data
    dtype = cfg.trainer.dtype
    data = cached_data(cfg.data, dtype, lambda: cv_data(cfg.data, k, dtype), "folds", k)
    seeds = [fold_seed(cfg.trainer.seed, i) for i in range(k)]
    fold_cfgs = [with_seed(cfg, s) for s in seeds]
    built = [build(c, ds) for c, ds in zip(fold_cfgs, data.folds)]
    spec = built[0][0]
    engines = []
    with blas_limit(cfg, spec):
        try:
            folds = []
            for c, ds, (fold_spec, params) in zip(fold_cfgs, data.folds, built):
                engines.append(make_engine(c, fold_spec, params))
                T = split_targets(ds, spec, dtype, ("train", "val"))
                folds.append(Fold(engines[-1], ds.train.X, T["train"], ds.val.X, T["val"],
                                  seed=c.trainer.seed))
            result = fit_folds(folds, cfg, callbacks)
            per_fold = [
                {"train": f.engine.evaluate(f.X_train, f.T_train),
                 "val": f.engine.evaluate(f.X_val, f.T_val)}
                for f in folds
            ]
            fold_params = [e.get_params() for e in engines]
        finally:
            for engine in engines:
                engine.close()
    members = [
        checkpoint_of(p, spec, ds, cfg, standardized_on=f"fold {i} of {k}",
                        cv={"k": k, "fold": i, "seed": s})
        for i, (p, ds, s) in enumerate(zip(fold_params, data.folds, seeds))
    ]
    final = {
        split: tuple(float(np.mean([m[split][j] for m in per_fold])) for j in (0, 1))
        for split in ("train", "val")
    }
    final["test"] = (float("nan"), float("nan"))
    if evaluate_test:
        predictor = Predictor(members, [f"fold {i}" for i in range(k)])
        final["test"] = ensemble_metrics(predictor, data.test_X_raw, data.test_y)
    seconds = time.perf_counter() - start
    summary = make_summary(cfg, result, final, engine_name, spec.n_params, data.folds[0], seconds)
    summary.update(cv_folds=k, fold_seeds=seeds)
    for i, m in enumerate(per_fold):
        summary[f"val_loss_fold{i}"], summary[f"val_accuracy_fold{i}"] = m["val"]
    summary["refit_epochs"] = result.best_epoch or len(result.history)
    if "base_lrs" in result.extra:
        summary["refit_base_lrs"] = result.extra["base_lrs"][: summary["refit_epochs"]]
    if out_dir is not None:
        out = Path(out_dir)
        names = [f"model_fold{i}.npz" for i in range(k)]
        summary["fold_checkpoints"] = names
        write_run_files(out, cfg, result, summary)
        for name, member in zip(names, members):
            C.save(out / name, member)
    return summary
