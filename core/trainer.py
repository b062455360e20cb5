"""The training loop: epochs of shuffled minibatches, LR schedule, early stopping, callbacks.

A callback is any ``f(metrics: dict) -> str | None`` called after every epoch with that
epoch's metrics; returning a string stops training with that string as the stop reason
(the sweeper returns "pruned", a live plot returns None).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .config import ExperimentConfig
from .engines.base import Engine, n_batches
from .schedules import ReduceLROnPlateau, epoch_lrs

Callback = Callable[[dict], Optional[str]]


@dataclass
class FitResult:
    history: list[dict]  # one row per epoch (epoch numbers start at 1)
    best_epoch: int  # epoch with the best monitored value (0 if none was finite)
    best_value: float
    stop_reason: str  # max_epochs | early_stopping | diverged | whatever a callback returned
    seconds: float
    monitor: str
    extra: dict = field(default_factory=dict)


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


def fit(
    engine: Engine,
    cfg: ExperimentConfig,
    X_train: np.ndarray,
    T_train: np.ndarray,
    X_val: np.ndarray,
    T_val: np.ndarray,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
) -> FitResult:
    tr, es, sch = cfg.trainer, cfg.trainer.early_stopping, cfg.scheduler
    engine.set_train_data(X_train, T_train)
    n = len(X_train)
    steps = n_batches(n, tr.batch_size)
    rng = np.random.default_rng(tr.seed)  # batch order; the engine has its own for dropout
    plateau = ReduceLROnPlateau(sch, cfg.optimizer.lr) if sch.name == "plateau" else None
    mode = monitor_mode(es.monitor, es.mode)
    best_value, best_epoch, best_params, wait = float("nan"), 0, None, 0
    history: list[dict] = []
    stop_reason = "max_epochs"
    start = time.perf_counter()
    for epoch in range(tr.epochs):
        t0 = time.perf_counter()
        base_lr = plateau.lr if plateau is not None else cfg.optimizer.lr
        lrs = epoch_lrs(epoch, steps, sch, base_lr, tr.epochs)
        order = rng.permutation(n)
        train_loss, train_acc = engine.train_epoch(order, lrs, tr.batch_size)
        val_loss, val_acc = engine.evaluate(X_val, T_val)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": float(lrs[0]),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        value = row[es.monitor]
        if is_better(value, best_value, mode, es.min_delta):
            best_value, best_epoch, wait = value, epoch + 1, 0
            if es.enabled and es.restore_best:
                best_params = engine.get_params()
        else:
            wait += 1
        if plateau is not None:
            plateau.step(row[sch.monitor])
        reason = None
        for callback in callbacks:
            reason = callback(row) or reason
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            reason = "diverged"
        elif reason is None and es.enabled and wait >= max(es.patience, 1):
            reason = "early_stopping"
        if reason is not None:
            stop_reason = reason
            break
    if best_params is not None and best_epoch != len(history):
        engine.set_params(best_params)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_value=best_value,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - start,
        monitor=es.monitor,
    )
