"""Learning-rate schedules as pure functions of time measured in epochs.

Step ``i`` of ``n_batches`` in epoch ``e`` runs at ``t = e + i / n_batches``. Each schedule is a
small pure function ``f(t, *, base_lr, ...)`` whose keyword names are ``SchedulerConfig`` field
names (plus ``base_lr`` and ``total_epochs``), so ``lr_at`` fills them straight from the config
and tests can call a schedule directly. The functions use numpy operations only, so ``t`` may be
a float or an array of times (``epoch_lrs`` evaluates a whole epoch in one call).

``plateau`` is the exception that needs state: ``ReduceLROnPlateau`` tracks the monitored metric
and the trainer passes its current ``lr`` to ``lr_at`` as ``base_lr``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Optional

import numpy as np

from .config import SchedulerConfig

Time = float | np.ndarray  # a time in epochs, or an array of them

SCHEDULES: dict[str, Callable[..., Time]] = {}  # SchedulerConfig.name -> schedule function
_PARAMS: dict[str, tuple[str, ...]] = {}  # SchedulerConfig.name -> its keyword parameters


def register(name: str) -> Callable[[Callable[..., Time]], Callable[..., Time]]:
    """Register a schedule under its ``SchedulerConfig.name``; its keywords name its inputs."""

    def deco(fn: Callable[..., Time]) -> Callable[..., Time]:
        SCHEDULES[name] = fn
        _PARAMS[name] = tuple(
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        )
        return fn

    return deco


@register("constant")
def constant_lr(t: Time, *, base_lr: float) -> Time:
    return base_lr + 0.0 * np.asarray(t, dtype=np.float64)


@register("step")
def step_lr(t: Time, *, base_lr: float, step_size: float, gamma: float) -> Time:
    return base_lr * gamma ** np.floor(np.asarray(t, dtype=np.float64) / step_size)


@register("exponential")
def exponential_lr(t: Time, *, base_lr: float, gamma: float) -> Time:
    return base_lr * gamma ** np.asarray(t, dtype=np.float64)


_SNAP = 1e-9  # restart-index tolerance, far below one step of any epoch


def _restart_start(n: np.ndarray, t_0: float, t_mult: float) -> np.ndarray:
    """Start time of the n-th warm-restart period (n = 0 is the first period)."""
    if t_mult == 1.0:
        return t_0 * n
    return t_0 * (t_mult**n - 1.0) / (t_mult - 1.0)  # geometric series t_0 * sum t_mult**k


@register("cosine")
def cosine_lr(
    t: Time,
    *,
    base_lr: float,
    total_epochs: int,
    t_max: Optional[float],
    t_0: Optional[float],
    t_mult: float,
    eta_min: float,
) -> Time:
    """Cosine decay to eta_min over t_max (or the run); with t_0 set, SGDR warm restarts."""
    t = np.asarray(t, dtype=np.float64)
    if t_0 is None:
        # 1. one half-cosine over T epochs, then stay at the floor
        period = float(t_max or total_epochs)
        t_cur = np.minimum(t, period)
    else:
        # 2. SGDR: period n lasts t_0 * t_mult**n and starts at t_0 * sum_{k<n} t_mult**k;
        #    solve for n in closed form (as PyTorch does). The 1e-9 snaps a time that float
        #    rounding puts a hair before a restart (121 with t_0=1, t_mult=3; 0.3 with
        #    t_0=0.1) onto the restart, where PyTorch's int(log) lands a period short.
        if t_mult == 1.0:
            n = np.floor(t / t_0 + _SNAP)
        else:
            n = np.floor(np.log1p(t / t_0 * (t_mult - 1.0)) / math.log(t_mult) + _SNAP)
        period = t_0 * t_mult**n
        t_cur = t - _restart_start(n, t_0, t_mult)  # a snapped time is ~1e-16 below 0: cos(0)
    return eta_min + (base_lr - eta_min) * (1.0 + np.cos(np.pi * t_cur / period)) / 2.0


# cyclic amplitude scale per mode, as a function of (cycle number from 1, t in epochs, gamma)
_CYCLIC_SCALE: dict[str, Callable[[np.ndarray, np.ndarray, float], Any]] = {
    "triangular": lambda cycle, t, gamma: 1.0,
    "triangular2": lambda cycle, t, gamma: 1.0 / 2.0 ** (cycle - 1.0),
    "exp_range": lambda cycle, t, gamma: gamma**t,
}


@register("cyclic")
def cyclic_lr(
    t: Time, *, base_lr: float, max_lr: float, step_size: float, mode: str, gamma: float
) -> Time:
    """Smith's cyclical LR: a triangle between base_lr and max_lr; step_size is a half cycle."""
    t = np.asarray(t, dtype=np.float64)
    cycle = np.floor(1.0 + t / (2.0 * step_size))
    x = np.abs(t / step_size - 2.0 * cycle + 1.0)  # 1 at the troughs, 0 at the peak
    amplitude = (max_lr - base_lr) * np.maximum(0.0, 1.0 - x)
    return base_lr + amplitude * _CYCLIC_SCALE[mode](cycle, t, gamma)


@register("plateau")
def plateau_lr(t: Time, *, base_lr: float) -> Time:
    """The trainer passes ReduceLROnPlateau.lr as base_lr; within an epoch it is constant."""
    return constant_lr(t, base_lr=base_lr)


def _lrs(t: Time, cfg: SchedulerConfig, base_lr: float, total_epochs: int) -> np.ndarray:
    """The schedule named by cfg at time(s) t, with the linear warmup in front."""
    t = np.asarray(t, dtype=np.float64)
    inputs = {"base_lr": base_lr, "total_epochs": total_epochs}
    kwargs = {p: inputs[p] if p in inputs else getattr(cfg, p) for p in _PARAMS[cfg.name]}
    lr = np.asarray(SCHEDULES[cfg.name](t, **kwargs), dtype=np.float64)
    if cfg.warmup_epochs > 0.0:
        # warmup scales the schedule from warmup_start * lr up to lr over warmup_epochs
        ramp = cfg.warmup_start + (1.0 - cfg.warmup_start) * t / cfg.warmup_epochs
        lr = np.where(t < cfg.warmup_epochs, lr * ramp, lr)
    return lr


def lr_at(t: float, cfg: SchedulerConfig, base_lr: float, total_epochs: int) -> float:
    """Learning rate at time t (in epochs, fractional inside an epoch)."""
    return float(_lrs(t, cfg, base_lr, total_epochs))


def epoch_lrs(
    epoch: int, n_batches: int, cfg: SchedulerConfig, base_lr: float, total_epochs: int
) -> np.ndarray:
    """Learning rate of every optimizer step of one epoch: float64, shape (n_batches,)."""
    t = epoch + np.arange(n_batches, dtype=np.float64) / n_batches  # (n_batches,)
    return np.broadcast_to(_lrs(t, cfg, base_lr, total_epochs), (n_batches,)).copy()


class ReduceLROnPlateau:
    """Cut the lr by cfg.factor when cfg.monitor has not improved for cfg.patience epochs.

    Same rules as PyTorch's ReduceLROnPlateau with threshold_mode='rel'. Call ``step`` once at
    the end of every epoch with the monitored value; NaN never counts as an improvement.
    """

    def __init__(self, cfg: SchedulerConfig, base_lr: float) -> None:
        self.cfg = cfg
        mode = cfg.plateau_mode
        if mode == "auto":
            mode = "max" if "accuracy" in cfg.monitor else "min"
        self.mode = mode
        self.lr = float(base_lr)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best * (1.0 - self.cfg.threshold)
        return value > self.best * (1.0 + self.cfg.threshold)  # False for NaN either way

    def step(self, value: float) -> bool:
        """Record one epoch's metric; return True if the lr was reduced."""
        value = float(value)
        if self.is_better(value):
            self.best = value
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.bad_epochs = 0  # bad epochs during cooldown do not count
        if self.bad_epochs <= self.cfg.patience:
            return False
        self.cooldown_counter = self.cfg.cooldown
        self.bad_epochs = 0
        new_lr = max(self.lr * self.cfg.factor, self.cfg.min_lr)
        if self.lr - new_lr <= 1e-12:  # already at min_lr
            return False
        self.lr = new_lr
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {
            "lr": self.lr,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
