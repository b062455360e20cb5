"""The objective: trial -> overrides -> composed config -> core training -> value.

The validation metric is reported to the trial after every epoch, so Optuna's pruners see
learning curves; a pruned or diverged run stops through the trainer's callback hook. Every
trial writes its artifacts to ``<study_dir>/trials/<number>/`` and records what a table
needs (best epoch, epochs run, pruned-at epoch, seconds, stop or fail reason) as user attrs.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError


class TrialFailed(Exception):
    """The trial ran but produced no usable value (diverged, NaN metric)."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_dir(study_dir: Path, number: int) -> Path:
    """A fresh folder for this trial; an existing one (from an earlier study of the same
    name) is never overwritten: the new one gets a suffix."""
    base = study_dir / "trials" / f"{number:04d}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}.{k}")
        k += 1
    path.mkdir(parents=True)
    return path


@dataclass
class Objective:
    space: object  # sweeper.space.SearchSpace
    study_dir: Path
    metric: str = "val_accuracy"
    overrides: list[str] = field(default_factory=list)  # from the command line, win over the space file

    def overrides_for(self, trial) -> list[str]:
        return self.space.sample(trial) + list(self.overrides)

    def __call__(self, trial) -> float:
        from conf.schema import compose_experiment
        from core.experiment import run

        import optuna

        overrides = self.overrides_for(trial)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("heartbeat", time.time())
        try:
            _, cfg = compose_experiment(overrides)
        except ConfigError as e:
            raise TrialFailed(f"config: {e}") from None
        out = trial_dir(self.study_dir, trial.number)
        trial.set_user_attr("dir", str(out))
        metric = self.metric

        def report(row: dict) -> str | None:
            value = row[metric]
            trial.set_user_attr("heartbeat", time.time())
            if not math.isfinite(value):
                return None  # the trainer stops a diverged run itself
            trial.report(value, step=row["epoch"])
            if trial.should_prune():
                trial.set_user_attr("pruned_at", row["epoch"])
                return "pruned"
            return None

        summary = run(cfg, out_dir=out, callbacks=[report], plot=False, evaluate_test=False)
        for key in ("best_epoch", "epochs_run", "stop_reason", "train_seconds", "engine",
                    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "n_params"):
            value = summary[key]
            trial.set_user_attr(key, None if isinstance(value, float) and not math.isfinite(value) else value)
        if summary["stop_reason"] == "pruned":
            raise optuna.TrialPruned(f"pruned at epoch {summary['epochs_run']}")
        if summary["stop_reason"] == "diverged":
            raise TrialFailed(f"diverged: non-finite loss at epoch {summary['epochs_run']}")
        value = summary[metric]
        if not math.isfinite(value):
            raise TrialFailed(f"{metric} is {value}")
        return float(value)
