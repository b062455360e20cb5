"""Median and percentile pruning at a constant cost per report.

Optuna's ``PercentilePruner`` (``MedianPruner`` is its 50th percentile) answers every report
from scratch: it collects each complete trial's value at this step and takes their percentile.
That is Python and NumPy work proportional to the study for every epoch of every trial:
~0.4 ms a report at 100 complete trials, ~5 ms a trial of the default search (inside its
training time), and five times that at 1,000 trials.

A complete trial never changes, so ``SteadyPercentilePruner`` keeps, for each step, the values
of the complete trials it has seen and their percentile, and takes a trial's values in once,
the first time it sees it complete. Its decisions are Optuna's: the same checks in the same
order, and the percentile of the same multiset of values (``np.nanpercentile`` sorts them,
so the order they arrived in does not matter). tests/test_pruning.py compares the two
pruners' decisions report by report on random studies.
"""

from __future__ import annotations

import math

import numpy as np
from optuna.pruners import PercentilePruner
from optuna.pruners._percentile import (
    _get_best_intermediate_result_over_steps,
    _is_first_in_interval_step,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState


class SteadyPercentilePruner(PercentilePruner):
    """``PercentilePruner`` with each step's percentile over the complete trials kept between
    reports (same arguments, same decisions)."""

    def __init__(self, percentile: float, n_startup_trials: int = 5, n_warmup_steps: int = 0,
                 interval_steps: int = 1, *, n_min_trials: int = 1) -> None:
        super().__init__(percentile, n_startup_trials, n_warmup_steps, interval_steps,
                         n_min_trials=n_min_trials)
        self._study_key: tuple | None = None
        self._seen: set[int] = set()  # trial ids whose values are in _values
        self._values: dict[int, list[float]] = {}  # step -> complete trials' values there
        self._at: dict[int, float] = {}  # step -> percentile of _values[step] (nan: no verdict)

    def _take_in(self, study, completed: list) -> None:
        """Add the values of complete trials not seen before (all of them for a new study)."""
        key = (id(study._storage), study._study_id)
        if key != self._study_key:
            self._study_key, self._seen, self._values, self._at = key, set(), {}, {}
        if len(completed) == len(self._seen):
            return
        for t in completed:
            if t._trial_id in self._seen:
                continue
            self._seen.add(t._trial_id)
            for step, value in t.intermediate_values.items():
                self._values.setdefault(step, []).append(value)
                self._at.pop(step, None)

    def _percentile_at(self, step: int, direction: StudyDirection) -> float:
        """Optuna's _get_percentile_intermediate_result_over_trials, from the kept values."""
        if step not in self._at:
            values = np.array(self._values.get(step, []), dtype=float)
            if len(values) < self._n_min_trials or np.isnan(values).all():
                self._at[step] = math.nan
            else:
                q = 100 - self._percentile if direction == StudyDirection.MAXIMIZE else self._percentile
                self._at[step] = float(np.nanpercentile(values, q))
        return self._at[step]

    def prune(self, study, trial) -> bool:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        n_trials = len(completed)
        if n_trials == 0 or n_trials < self._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        if not _is_first_in_interval_step(step, trial.intermediate_values.keys(),
                                          self._n_warmup_steps, self._interval_steps):
            return False
        direction = study.direction
        best = _get_best_intermediate_result_over_steps(trial, direction)
        if math.isnan(best):
            return True
        self._take_in(study, completed)
        p = self._percentile_at(step, direction)
        if math.isnan(p):
            return False
        return bool(best < p if direction == StudyDirection.MAXIMIZE else best > p)
