"""The objective: trial -> overrides -> composed config -> core training -> value.

The validation metric (the fold mean when trials are K-fold cross-validated) is reported to
the trial after every epoch, so Optuna's pruners see
learning curves; a pruned or diverged run stops through the trainer's callback hook. Every
trial writes its artifacts to ``<study_dir>/trials/<number>/``.

Storage writes per trial, the fewest that keep every guarantee: the sampled parameters (one
each, Optuna's ask), ``worker`` at the start (a dead worker's trial is re-queued at once on
its own host), one report per epoch (what pruning needs), one ``run`` user attr at the end
holding everything the tables need (best epoch, epochs run, pruned-at epoch, seconds, stop
or fail reason, metrics, overrides, folder), and the final state. Heartbeats come from the
heartbeat thread only (sweeper.claim.Heartbeat), every 10 s of a longer trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError

from .claim import worker_id
from .compose import ComposeCache

RUN_KEYS = ("best_epoch", "epochs_run", "stop_reason", "train_seconds", "engine",
            "train_loss", "train_accuracy", "val_loss", "val_accuracy", "n_params")


class TrialFailed(Exception):
    """The trial ran but produced no usable value (diverged, NaN metric)."""


def trial_dir(study_dir: Path, number: int) -> Path:
    """A fresh folder for this trial; an existing one (from an earlier study of the same
    name) is never overwritten: the new one gets a suffix."""
    base = study_dir / "trials" / f"{number:04d}"
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            path = base.with_name(f"{base.name}.{k}")
            k += 1


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class Objective:
    space: object  # sweeper.space.SearchSpace
    study_dir: Path
    metric: str = "val_accuracy"
    overrides: list[str] = field(default_factory=list)  # from the command line, win over the space file
    cv: int = 1  # K-fold cross-validated trials when > 1 (core.crossval.run_cv)
    one_thread: bool = False  # one BLAS thread (several workers share the machine)
    composer: ComposeCache = field(default_factory=ComposeCache)

    def overrides_for(self, trial) -> list[str]:
        return self.space.sample(trial) + list(self.overrides)

    def should_stop(self, trial, epoch: int, value: float) -> bool:
        """Report one epoch's value; True when the pruner says stop (sweeper.objectives
        overrides it for several objectives, which Optuna does not prune)."""
        trial.report(value, step=epoch)
        return trial.should_prune()

    def __call__(self, trial, run: dict) -> float:
        """Train the trial's config and return its value, filling ``run`` with what the
        tables need (the caller writes it once, with the outcome: sweeper.study.run_trial)."""
        import optuna

        from core.experiment import run as run_experiment

        overrides = self.overrides_for(trial)
        run["overrides"] = overrides
        try:
            cfg = self.composer.experiment(overrides + ["engine.threads=1"] * self.one_thread)
        except ConfigError as e:
            raise TrialFailed(f"config: {e}") from None
        out = trial_dir(self.study_dir, trial.number)
        run["dir"] = str(out)
        trial.set_user_attr("worker", worker_id())  # its own host re-queues it at once if it dies
        metric = self.metric

        def report(row: dict) -> str | None:
            value = row[metric]
            if not math.isfinite(value):
                return None  # the trainer stops a diverged run itself
            if self.should_stop(trial, row["epoch"], value):
                run["pruned_at"] = row["epoch"]
                return "pruned"
            return None

        if self.cv > 1:
            from core.crossval import run_cv

            summary = run_cv(cfg, self.cv, out_dir=out, callbacks=[report])
        else:
            summary = run_experiment(cfg, out_dir=out, callbacks=[report], evaluate_test=False)
        run.update({key: _finite(summary[key]) for key in RUN_KEYS})
        if summary["stop_reason"] == "pruned":
            raise optuna.TrialPruned(f"pruned at epoch {summary['epochs_run']}")
        if summary["stop_reason"] == "diverged":
            raise TrialFailed(f"diverged: non-finite loss at epoch {summary['epochs_run']}")
        value = summary[metric]
        if not math.isfinite(value):
            raise TrialFailed(f"{metric} is {value}")
        return float(value)
