"""Several objectives and constraints: parsing, the Pareto front, stopping hopeless trials.

    --metric val_accuracy:max,n_params:min        two objectives, each with its direction
    --constraint 'n_params<=20000'                 feasible when the value is within the bound

A study with one objective and no constraint is the single-objective study of
sweeper.objective, unchanged. With several objectives the study is an Optuna
multi-objective study (``directions=[...]``); constraints go through Optuna's own
``trial.set_constraint`` (a value > 0 is a violation), which TPE and NSGA-II read to steer
away from infeasible regions, and which ``study.best_trials`` honours.

Optuna does not prune multi-objective trials (``Trial.report`` raises). Early stopping still
runs in every trial, and ``HopelessRule`` stops a trial whose *first* objective is clearly
behind: see its docstring for the rule and why it never stops the small end of the front.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from core.config import METRICS, ConfigError

from .objective import Objective, TrialFailed

# what a trial measures: every per-epoch metric, the network's size, its training time and
# its inference time per sample at batch 1 (latency_us) and batch 256 (latency_us_b256)
LATENCY = ("latency_us", "latency_us_b256")
OBJECTIVES = (*METRICS, "n_params", "train_seconds", *LATENCY)
KNOWN_AT_START = ("n_params",)  # fixed by the configuration before the first epoch
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
EXAMPLE = "e.g. val_accuracy:max,n_params:min"


@dataclass(frozen=True)
class Goal:
    name: str
    direction: str  # maximize | minimize

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def text(self) -> str:
        return f"{self.name}:{self.direction[:3]}"


def default_direction(name: str) -> str:
    return "maximize" if "accuracy" in name else "minimize"


def parse_goals(spec: str | Sequence[str], where: str = "--metric",
                direction: str | None = None) -> tuple[Goal, ...]:
    """'val_accuracy:max,n_params:min' (or a list of such items) -> Goals. A single name
    without a direction takes ``direction``, else the metric's natural one."""
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    goals: list[Goal] = []
    for item in items:
        name, colon, d = item.strip().partition(":")
        if name not in OBJECTIVES:
            raise ConfigError(f"{where}: unknown metric {name!r} in {_show(spec)}; allowed: "
                              f"{', '.join(OBJECTIVES)}, each as name:max or name:min ({EXAMPLE})")
        if colon and d not in DIRECTIONS:
            raise ConfigError(f"{where}: direction {d!r} of {name} is not allowed; allowed: max, "
                              f"min ({EXAMPLE})")
        if any(g.name == name for g in goals):
            raise ConfigError(f"{where}: {name} is named twice in {_show(spec)}; allowed: each "
                              "metric once")
        goals.append(Goal(name, DIRECTIONS[d] if colon else None))
    if len(goals) == 1 and goals[0].direction and direction and direction != goals[0].direction:
        raise ConfigError(f"--direction: {direction!r} contradicts {where} {_show(spec)}; "
                          "allowed: one of them, or the same direction")
    if len(goals) > 1 and direction is not None:
        raise ConfigError(f"--direction: {direction!r} with several objectives; allowed: one "
                          f"direction per objective in {where} ({EXAMPLE})")
    if goals[0].name not in METRICS:
        raise ConfigError(f"{where}: the first objective is {goals[0].name!r}; allowed first: "
                          f"{', '.join(METRICS)} (it is what a trial reports each epoch)")
    return tuple(Goal(g.name, g.direction or direction or default_direction(g.name))
                 for g in goals)


def spec_text(goals: Sequence[Goal]) -> str:
    """The study's stored metric: 'val_accuracy' for one objective (as single-objective
    studies always stored it), 'val_accuracy:max,n_params:min' for several."""
    return goals[0].name if len(goals) == 1 else ",".join(g.text() for g in goals)


def _show(spec: str | Sequence[str]) -> str:
    return repr(spec if isinstance(spec, str) else ",".join(map(str, spec)))


@dataclass(frozen=True)
class Bound:
    name: str
    op: str  # <= | >=
    limit: float

    def violation(self, value: float) -> float:
        """Optuna's constraint value: <= 0 feasible, > 0 by how much it is violated."""
        return value - self.limit if self.op == "<=" else self.limit - value

    def text(self) -> str:
        return f"{self.name}{self.op}{self.limit:g}"


CONSTRAINT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*(\S+)\s*")


def parse_constraint(text: str, where: str = "--constraint") -> Bound:
    """'n_params<=20000' -> Bound; ConfigError naming it for anything else."""
    m = CONSTRAINT.fullmatch(str(text))
    allowed = f"NAME<=NUMBER or NAME>=NUMBER, NAME one of {', '.join(OBJECTIVES)}"
    if not m:
        raise ConfigError(f"{where}: {str(text)!r} is malformed; allowed: {allowed} "
                          "(e.g. 'n_params<=20000')")
    name, op, number = m.groups()
    if name not in OBJECTIVES:
        raise ConfigError(f"{where}: unknown metric {name!r} in {str(text)!r}; allowed: {allowed}")
    try:
        limit = float(number)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit):
        raise ConfigError(f"{where}: {number!r} in {str(text)!r} is not a finite number; "
                          f"allowed: {allowed}")
    return Bound(name, op, limit)


def parse_constraints(texts: Sequence[str] | None,
                      where: str = "--constraint") -> tuple[Bound, ...]:
    return tuple(parse_constraint(t, where) for t in texts or ())


def is_feasible(trial) -> bool:
    """Every constraint value of a (frozen) trial is <= 0 (no constraint: feasible)."""
    return all(v <= 0 for v in trial.constraints.values())


def pareto_mask(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """(n,) True for the points no other point dominates. points (n, k); a point dominates
    another when it is at least as good in every objective and better in one."""
    L = np.asarray(points, dtype=np.float64) * np.where(maximize, -1.0, 1.0)  # (n, k) minimize all
    mask = np.ones(len(L), dtype=bool)
    for i in range(len(L)):
        dominated = np.all(L <= L[i], axis=1) & np.any(L < L[i], axis=1)  # (n,) who beats i
        mask[i] = not dominated.any()
    return mask


def pareto_trials(study) -> list:
    """The complete, feasible trials on the Pareto front, by number."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.values is not None and is_feasible(t)]
    if not trials:
        return []
    maximize = [d.name == "MAXIMIZE" for d in study.directions]
    mask = pareto_mask(np.array([t.values for t in trials]), maximize)
    return [t for t, on in zip(trials, mask) if on]


@dataclass
class HopelessRule:
    """Stop a multi-objective trial whose first objective is clearly behind its peers.

    A trial's *peers* are the complete, feasible trials that are at least as good as it in
    every other objective (all of which must be known before training: n_params). A peer
    that also ends better in the first objective dominates the trial, which then cannot be
    on the front. So at epoch e (from epoch ``warmup`` on) the trial stops when its best
    first-objective value so far is worse than the ``percentile`` of its peers' values at
    epoch e, with at least ``n_min`` peers reporting e: MedianPruner's test (percentile 50;
    25 for --pruner percentile), asked only of the trials that would dominate this one.

    Why not the plain median: a small network is often less accurate than the median trial
    and still on the front (nothing smaller beats it). A trial smaller than every complete
    trial has no peers and is never stopped, so the small end of the front always trains
    to the end. When another objective is only known after training (train_seconds,
    latency, a second validation metric) the peers cannot be told, and the rule is off:
    early stopping alone ends such trials.
    """

    directions: tuple[str, ...]  # of every goal
    percentile: float = 50.0
    n_min: int = 5
    warmup: int = 2

    @classmethod
    def for_study(cls, goals: Sequence[Goal], pruner: str) -> HopelessRule | None:
        """The rule for these goals under --pruner (median: 50, percentile: 25, none: off)."""
        if pruner == "none" or any(g.name not in KNOWN_AT_START for g in goals[1:]):
            return None
        return cls(tuple(g.direction for g in goals), 50.0 if pruner == "median" else 25.0)

    def peers(self, trials: Sequence, known: Sequence[float]) -> list:
        """Complete feasible trials at least as good as ``known`` (the other objectives)."""
        out = []
        for t in trials:
            if t.values is None or not is_feasible(t):
                continue
            ok = all(v >= k if d == "maximize" else v <= k
                     for v, k, d in zip(t.values[1:], known, self.directions[1:]))
            if ok:
                out.append(t)
        return out

    def stop(self, trials: Sequence, epoch: int, best: float, known: Sequence[float]) -> bool:
        """trials: the study's complete trials; best: this trial's best first-objective value
        up to ``epoch``; known: its other objectives."""
        if epoch < self.warmup:
            return False
        values = [t.intermediate_values.get(epoch) for t in self.peers(trials, known)]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if len(values) < self.n_min:
            return False
        maximize = self.directions[0] == "maximize"
        ref = float(np.percentile(values, 100 - self.percentile if maximize else self.percentile))
        return best < ref if maximize else best > ref


def measured(run: dict, goals: Sequence[Goal], bounds: Sequence[Bound]) -> dict[str, float]:
    """The values the goals and bounds need, from a trial's ``run`` info (latency measured
    on the trained network when asked for: written into ``run`` too)."""
    names = {g.name for g in goals} | {b.name for b in bounds}
    if names & set(LATENCY):
        from core.latency import checkpoint_latency

        folder = Path(run["dir"])
        model = folder / "model.npz"
        if not model.exists():  # K-fold trials: every fold network has the same shape
            model = folder / "model_fold0.npz"
        lat = checkpoint_latency(model, run.get("engine") or "cpu")
        run["latency_us"], run["latency_us_b256"] = lat[1], lat[256]
    out = {}
    for name in names:
        value = run.get(name)
        if value is None or not math.isfinite(float(value)):
            raise TrialFailed(f"{name} is {value}")
        out[name] = float(value)
    return out


@dataclass
class GoalObjective(Objective):
    """sweeper.objective.Objective with several goals and/or constraints: returns one
    value per goal (a float for one goal), sets the trial's constraint values, and with
    several goals reports the first each epoch to the storage and asks HopelessRule."""

    goals: tuple[Goal, ...] = ()
    bounds: tuple[Bound, ...] = ()
    rule: HopelessRule | None = None
    _known: list[float] | None = field(default=None, repr=False)
    _curve: dict[int, float] = field(default_factory=dict, repr=False)

    def __call__(self, trial, run: dict) -> float | list[float]:
        self._known, self._curve = None, {}
        if self.rule is not None and len(self.goals) > 1:
            self._known = self._known_at_start(trial)
        super().__call__(trial, run)
        values = measured(run, self.goals, self.bounds)
        # the curve goes to the storage only for a trial that completes: TPE scores a pruned
        # trial by its last reported value with the study's single direction, which a
        # multi-objective study does not have (a stopped trial's curve is its metrics.csv)
        for epoch, value in self._curve.items():
            trial.storage.set_trial_intermediate_value(trial._trial_id, epoch, value)
        for b in self.bounds:
            trial.set_constraint(b.text(), b.violation(values[b.name]))
        out = [values[g.name] for g in self.goals]
        return out if len(out) > 1 else out[0]

    def _known_at_start(self, trial) -> list[float] | None:
        """n_params of the trial's configuration, before training (None: no stopping)."""
        from core.experiment import cached_dataset, n_outputs, resolve_loss
        from core.network import build_spec

        try:
            cfg = self.composer.experiment(self.overrides_for(trial))
            ds = cached_dataset(cfg.data, cfg.trainer.dtype)
            loss = resolve_loss(cfg.trainer.loss, ds)
            spec = build_spec(cfg.layers, cfg.regularization, n_in=ds.n_features,
                              n_out=n_outputs(loss, ds), loss=loss)
        except Exception:  # the base objective meets the same error and fails the trial
            return None
        known = {"n_params": float(spec.n_params)}
        return [known[g.name] for g in self.goals[1:]]

    def should_stop(self, trial, epoch: int, value: float) -> bool:
        if len(self.goals) < 2:
            return super().should_stop(trial, epoch, value)
        self._curve[epoch] = value  # Trial.report refuses several objectives
        if self.rule is None or self._known is None:
            return False
        from optuna.trial import TrialState

        best = (max if self.goals[0].maximize else min)(self._curve.values())
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return self.rule.stop(done, epoch, best, self._known)


def goal_objective(base: Objective, settings) -> GoalObjective:
    """The study's objective for settings with several goals or constraints."""
    goals = settings.goals
    rule = HopelessRule.for_study(goals, settings.pruner) if len(goals) > 1 else None
    return GoalObjective(base.space, base.study_dir, base.metric, base.overrides, cv=base.cv,
                         one_thread=base.one_thread, composer=base.composer, goals=goals,
                         bounds=settings.constraints, rule=rule)


def tell_goals(claimer, trial, frozen) -> None:
    """The hydra sweeper's tell for a job that finished: its goals' values (latency measured
    here, on the job's saved network), constraints set, and the study told."""
    from optuna.trial import TrialState

    s, trial_id = claimer.settings, claimer.trial_id(trial.number)
    run = dict(frozen.user_attrs.get("run") or {})
    try:
        values = measured(run, s.goals, s.constraints)
    except (TrialFailed, OSError, ConfigError) as e:
        claimer.storage.set_trial_user_attr(trial_id, "run", {**run, "fail_reason": str(e)[:1000]})
        claimer.study.tell(trial.number, state=TrialState.FAIL)
        return
    claimer.storage.set_trial_user_attr(trial_id, "run", run)  # with the latency
    for b in s.constraints:
        trial.set_constraint(b.text(), b.violation(values[b.name]))
    out = [values[g.name] for g in s.goals]
    claimer.study.tell(trial.number, out if len(out) > 1 else out[0])

