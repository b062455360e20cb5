"""The training loop: epochs of shuffled minibatches, LR schedule, early stopping, callbacks.

A callback is any ``f(metrics: dict) -> str | None`` called after every epoch with that
epoch's metrics; returning a string stops training with that string as the stop reason
(the sweeper returns "pruned", a live plot returns None).

``fit_folds`` trains K engines in lockstep (K-fold cross-validation): every epoch each fold
trains one epoch on its own training part and is evaluated on its own validation part; the
epoch's row holds the fold means, which early stopping, the plateau scheduler and the
callbacks see, and the best-weight restore takes every fold back to the mean's best epoch.
``fit`` is the case K = 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import ExperimentConfig
from .engines.base import Engine, n_batches
from .schedules import ReduceLROnPlateau, epoch_lrs

Callback = Callable[[dict], str | None]


@dataclass
class FitResult:
    history: list[dict]  # one row per epoch (epoch numbers start at 1)
    best_epoch: int  # epoch with the best monitored value (0 if none was finite)
    best_value: float
    stop_reason: str  # max_epochs | early_stopping | diverged | whatever a callback returned
    seconds: float
    monitor: str
    extra: dict = field(default_factory=dict)
    params_epoch: int = 0  # the epoch whose weights the engines hold at the end (restored or last)


def monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "accuracy" in monitor else "min"


def is_better(value: float, best: float, mode: str, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


@dataclass
class Fold:
    """One engine and its own split; ``seed`` draws the batch order (the engine has its own)."""

    engine: Engine
    X_train: np.ndarray  # (n_train, n_in)
    T_train: np.ndarray  # (n_train, n_out)
    X_val: np.ndarray  # (n_val, n_in); may be empty (a refit on all data): val metrics NaN
    T_val: np.ndarray  # (n_val, n_out)
    seed: int


METRIC_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def fit(
    engine: Engine,
    cfg: ExperimentConfig,
    X_train: np.ndarray,
    T_train: np.ndarray,
    X_val: np.ndarray,
    T_val: np.ndarray,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
) -> FitResult:
    """Train one engine; its batch order is drawn from ``cfg.trainer.seed``."""
    fold = Fold(engine, X_train, T_train, X_val, T_val, seed=cfg.trainer.seed)
    return fit_folds([fold], cfg, callbacks)


def fold_mean(values: list[float]) -> float:
    """The mean over folds; one fold's value is returned as it is."""
    return values[0] if len(values) == 1 else float(np.mean(values))


def fit_folds(
    folds: Sequence[Fold],
    cfg: ExperimentConfig,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    *,
    base_lrs: Sequence[float] | None = None,
) -> FitResult:
    """Train every fold's engine in lockstep, epoch by epoch, on the fold-mean metrics.

    Rows hold the fold means of METRIC_KEYS; with several folds also ``val_loss_fold<i>`` and
    ``val_accuracy_fold<i>``. A fold whose losses turn non-finite stops all as "diverged".
    With scheduler=plateau, ``extra["base_lrs"]`` holds the base lr of every epoch; passing
    such a list as ``base_lrs`` replays it instead of reacting to the monitor (a refit on all
    data has no validation split to watch).
    """
    if not folds:
        raise ValueError("fit_folds: needs at least one fold")
    tr, es, sch = cfg.trainer, cfg.trainer.early_stopping, cfg.scheduler
    for fold in folds:
        fold.engine.set_train_data(fold.X_train, fold.T_train)
    sizes = [len(fold.X_train) for fold in folds]
    steps = [n_batches(n, tr.batch_size) for n in sizes]
    from .shuffle import Permutations  # numba: imported where training starts

    # batch order per fold: rng.permutation(n) of default_rng(seed), compiled
    orders = [Permutations(fold.seed) for fold in folds]
    replay = base_lrs is not None and sch.name == "plateau"
    plateau = ReduceLROnPlateau(sch, cfg.optimizer.lr) if sch.name == "plateau" else None
    mode = monitor_mode(es.monitor, es.mode)
    best_value, best_epoch, best_params, wait = float("nan"), 0, None, 0
    history: list[dict] = []
    used_lrs: list[float] = []  # plateau's base lr of every epoch
    stop_reason = "max_epochs"
    start = time.perf_counter()
    for epoch in range(tr.epochs):
        t0 = time.perf_counter()
        if replay:
            assert base_lrs is not None
            if epoch >= len(base_lrs):
                break  # the replayed run ends where the recorded one did
            base_lr = float(base_lrs[epoch])
        else:
            base_lr = plateau.lr if plateau is not None else cfg.optimizer.lr
        used_lrs.append(base_lr)
        per_fold: list[tuple[float, float, float, float]] = []  # METRIC_KEYS of each fold
        finite = True
        for fold, n, n_steps, order_of in zip(folds, sizes, steps, orders):
            lrs = epoch_lrs(epoch, n_steps, sch, base_lr, tr.epochs)
            order = order_of(n)
            train_loss, train_acc = fold.engine.train_epoch(order, lrs, tr.batch_size)
            val_loss, val_acc = fold.engine.evaluate(fold.X_val, fold.T_val)
            per_fold.append((train_loss, train_acc, val_loss, val_acc))
            has_val = len(fold.X_val) > 0
            finite &= math.isfinite(train_loss) and (math.isfinite(val_loss) or not has_val)
        row: dict = {"epoch": epoch + 1}
        for j, key in enumerate(METRIC_KEYS):
            row[key] = fold_mean([m[j] for m in per_fold])
        if len(folds) > 1:
            for i, m in enumerate(per_fold):
                row[f"val_loss_fold{i}"] = m[2]
                row[f"val_accuracy_fold{i}"] = m[3]
        row["lr"] = float(lrs[0])  # every fold's first step of the epoch has the same lr
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        value = row[es.monitor]
        if is_better(value, best_value, mode, es.min_delta):
            best_value, best_epoch, wait = value, epoch + 1, 0
            if es.enabled and es.restore_best:
                best_params = [fold.engine.get_params() for fold in folds]
        else:
            wait += 1
        if plateau is not None and not replay:
            plateau.step(row[sch.monitor])
        reason = None
        for callback in callbacks:
            reason = callback(row) or reason
        if not finite:
            reason = "diverged"
        elif reason is None and es.enabled and wait >= max(es.patience, 1):
            reason = "early_stopping"
        if reason is not None:
            stop_reason = reason
            break
    restored = best_params is not None and best_epoch != len(history)
    if restored:
        for fold, params in zip(folds, best_params):
            fold.engine.set_params(params)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_value=best_value,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - start,
        monitor=es.monitor,
        extra={"base_lrs": used_lrs} if plateau is not None else {},
        params_epoch=best_epoch if restored else len(history),
    )
