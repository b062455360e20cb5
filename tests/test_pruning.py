"""SteadyPercentilePruner against Optuna's own pruners, report by report."""

import math

import numpy as np
import optuna
import pytest
from optuna.pruners import MedianPruner, PercentilePruner
from optuna.trial import TrialState, create_trial

from sweeper.pruning import SteadyPercentilePruner
from sweeper.settings import make_pruner


def _curve(rng, n_steps: int, *, nan: float = 0.05) -> dict[int, float]:
    """Accuracy-like values at some steps from 1 (gaps, repeats of round values, NaNs)."""
    steps = sorted(rng.choice(np.arange(1, 16), size=n_steps, replace=False).tolist())
    values = np.round(rng.uniform(0.5, 1.0, len(steps)), int(rng.integers(1, 4)))
    return {s: (math.nan if rng.random() < nan else float(v)) for s, v in zip(steps, values)}


def _add(study, rng) -> None:
    state = TrialState.COMPLETE if rng.random() < 0.7 else TrialState.PRUNED
    curve = _curve(rng, int(rng.integers(1, 12)))
    value = 0.9 if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, value=value, intermediate_values=curve))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_decisions_equal_optunas_as_the_study_grows(seed, direction):
    rng = np.random.default_rng(seed)
    kwargs = {"n_startup_trials": int(rng.integers(0, 6)), "n_warmup_steps": int(rng.integers(0, 6)),
              "interval_steps": int(rng.integers(1, 3)), "n_min_trials": int(rng.integers(1, 4))}
    percentile = float(rng.choice([25.0, 50.0, 10.0, 90.0]))
    reference = (MedianPruner(**kwargs) if percentile == 50.0 else
                 PercentilePruner(percentile, **kwargs))  # fmt: skip
    steady = SteadyPercentilePruner(percentile, **kwargs)
    study = optuna.create_study(direction=direction)
    decisions = []
    for _ in range(60):
        if rng.random() < 0.4:
            _add(study, rng)  # a trial completes between reports
        curve = _curve(rng, int(rng.integers(1, 10)), nan=0.02)
        running = create_trial(state=TrialState.RUNNING, intermediate_values=curve)
        want = reference.prune(study, running)
        assert steady.prune(study, running) == want, (curve, len(study.trials))
        decisions.append(want)
    assert len(set(decisions)) == 2 or seed  # the study must exercise both answers


def test_a_second_study_starts_from_its_own_trials():
    rng = np.random.default_rng(7)
    first, second = (optuna.create_study(direction="maximize") for _ in range(2))
    for _ in range(20):
        first.add_trial(create_trial(state=TrialState.COMPLETE, value=0.0,
                                     intermediate_values={6: 0.9}))
    for _ in range(5):
        second.add_trial(create_trial(state=TrialState.COMPLETE, value=0.0,
                                      intermediate_values={6: float(rng.uniform(0.1, 0.2))}))
    pruner = SteadyPercentilePruner(50.0, n_startup_trials=5)
    running = create_trial(state=TrialState.RUNNING, intermediate_values={6: 0.5})
    assert pruner.prune(first, running)  # 0.5 is below the first study's 0.9
    assert not pruner.prune(second, running)  # and above the second's 0.1-0.2


def test_search_pruners_are_the_steady_ones():
    assert isinstance(make_pruner("median"), SteadyPercentilePruner)
    assert make_pruner("median")._percentile == 50.0
    assert make_pruner("percentile")._percentile == 25.0
