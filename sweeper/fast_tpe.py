"""TPE at the speed of SciPy: Optuna's truncated-normal helpers, vectorized.

Optuna's TPESampler evaluates the log-mass of truncated normals through
``optuna.samplers._tpe._truncnorm``, written in pure Python so that Optuna needs no SciPy:
``_log_ndtr`` calls a Python function per element (``np.frompyfunc``). With a study of a
few hundred trials that is most of every ``ask()`` (measured on the default space: 14 ms per
ask at trial 200, 39 ms at trial 1,000, ~60 % of it in ``_log_ndtr``); it grows with the
study, since every trial adds kernels to the Parzen estimators (optuna/optuna#5478).

nnsweep depends on SciPy anyway, whose ``scipy.special`` has the same functions in C. This
module points Optuna's helpers at them, once per process, after checking on a grid that
spans both tails that they agree with Optuna's own (to 1e-12 absolute: in the far left tail
SciPy's are the accurate ones, where Optuna's ``0.5 + 0.5 erf(x/√2)`` cancels to 0 below
x = -8): if a later Optuna renames or changes them, nothing is replaced and TPE keeps
working as shipped.

With ``group=True`` every ask also decomposes the search space again from every finished
trial (``_GroupDecomposedSearchSpace.calculate``: ~2 ms at trial 100, growing with the
study) and deep-copies the result. Adding a trial to the decomposition is a partition
refinement, and refining again by a trial already added changes nothing (not the groups,
not their order, not the distribution kept for a name); finished trials never change. So
``calculate`` here adds only the trials it has not seen and copies the result only when it
changed: the same groups in the same order, hence the same samples. It is installed only
after it agreed with Optuna's own on a replayed sequence of trials with conditional
parameters; tests/test_fast_tpe.py checks that seeded studies sample exactly the same points
with and without it.
"""

from __future__ import annotations

import copy

import numpy as np

_REPLACED: dict[str, object] = {}  # name -> Optuna's original (empty: not installed)


def _replacements():
    from scipy import special

    return {"_log_ndtr": special.log_ndtr, "_ndtr": special.ndtr, "erf": special.erf}


def _agrees(original, fast) -> bool:
    x = np.concatenate([-np.logspace(-3, 2.5, 200), [0.0], np.logspace(-3, 2.5, 200)])
    try:
        want = np.asarray(original(x.copy()), dtype=float)
        got = np.asarray(fast(x.copy()), dtype=float)
    except Exception:  # noqa: BLE001 - a changed signature: keep Optuna's
        return False
    return bool(np.allclose(got, want, rtol=1e-8, atol=1e-12))


def install() -> bool:
    """Replace Optuna's per-element truncated-normal helpers by SciPy's and its group
    decomposition by the incremental one, each where it agrees (idempotent). Returns
    whether the helpers are replaced."""
    _install_calculate()
    if _REPLACED:
        return True
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:
        return False
    fast = _replacements()
    if not all(callable(getattr(_truncnorm, name, None)) for name in fast):
        return False
    if not all(_agrees(getattr(_truncnorm, name), f) for name, f in fast.items()):
        return False
    for name, f in fast.items():
        _REPLACED[name] = getattr(_truncnorm, name)
        setattr(_truncnorm, name, f)
    return True


def uninstall() -> None:
    """Put Optuna's own code back (tests and the benchmark's before column)."""
    from optuna.samplers._tpe import _truncnorm

    for name, original in _REPLACED.items():
        setattr(_truncnorm, name, original)
    _REPLACED.clear()
    if _CALCULATE:
        from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace

        _GroupDecomposedSearchSpace.calculate = _CALCULATE.pop()


_CALCULATE: list = []  # Optuna's own _GroupDecomposedSearchSpace.calculate while replaced


def incremental_calculate(self, study, use_cache: bool = False):
    """``_GroupDecomposedSearchSpace.calculate`` adding only the finished trials not yet
    added (by trial id), and deep-copying the groups only when they changed; each call
    returns a new group object (of new dicts) as Optuna's does."""
    from optuna.search_space.group_decomposed import _SearchSpaceGroup
    from optuna.trial import TrialState

    if self._study_id is None:
        self._study_id = study._study_id
    elif self._study_id != study._study_id:
        raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple studies.")
    states = (TrialState.COMPLETE, TrialState.PRUNED) if self._include_pruned else (
        TrialState.COMPLETE,)
    seen = self.__dict__.setdefault("_nnsweep_seen", set())  # ids of the trials added
    changed = "_nnsweep_copy" not in self.__dict__
    for trial in study._get_trials(deepcopy=False, states=states, use_cache=use_cache):
        if trial._trial_id not in seen:
            self._search_space.add_distributions(trial.distributions)
            seen.add(trial._trial_id)
            changed = True
    if changed:
        self._nnsweep_copy = [dict(space) for space in
                              copy.deepcopy(self._search_space.search_spaces)]
    group = _SearchSpaceGroup()
    group._search_spaces = [dict(space) for space in self._nnsweep_copy]
    return group


def _install_calculate() -> bool:
    if _CALCULATE:
        return True
    try:
        from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace
    except ImportError:
        return False
    original = _GroupDecomposedSearchSpace.calculate
    if not _calculate_agrees(_GroupDecomposedSearchSpace, original, incremental_calculate):
        return False
    _CALCULATE.append(original)
    _GroupDecomposedSearchSpace.calculate = incremental_calculate
    return True


def _calculate_agrees(cls, original, fast) -> bool:
    """Both calculates give the same groups (names, their order, distributions) after every
    trial of a replayed study whose trials finish out of order, with conditional params."""
    from types import SimpleNamespace

    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    rng = np.random.default_rng(0)
    trials: list = []

    def _get_trials(deepcopy=False, states=None, use_cache=False):
        return [t for t in sorted(trials, key=lambda t: t.number)
                if states is None or t.state in states]

    study = SimpleNamespace(_study_id=0, _get_trials=_get_trials)
    try:
        a, b = cls(True), cls(True)
        for number in rng.permutation(40):
            names = ["x", "kind"] + [f"w{i}" for i in range(int(rng.integers(0, 3)))]
            names += ["lr"] if rng.random() < 0.5 else ["a", "b"]
            dists = {n: CategoricalDistribution(["p", "q"]) if n == "kind"
                     else FloatDistribution(0, 1 + (n == "lr")) for n in names}
            state = TrialState.PRUNED if number % 7 == 0 else TrialState.COMPLETE
            trials.append(SimpleNamespace(number=int(number), _trial_id=int(number),
                                          state=state, distributions=dists))
            ga, gb = original(a, study, True), fast(b, study, True)
            # the groups in order; names sorted, as TPE reads them (Optuna's own dicts take
            # the order of a set)
            if [sorted(g.items()) for g in ga.search_spaces] != \
                    [sorted(g.items()) for g in gb.search_spaces]:
                return False
    except Exception:  # noqa: BLE001 - a changed Optuna: keep its own
        return False
    return True
