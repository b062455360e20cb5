"""Cheaper TPE asks, the same samples: SciPy's truncated-normal helpers, an incremental
group decomposition and cached internal values, each installed only where it agrees.

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
trial (``_GroupDecomposedSearchSpace.calculate``: ~0.8 ms at trial 100, growing with the
study) and deep-copies the result. Adding a trial to the decomposition is a partition
refinement, and refining again by a trial already added changes nothing (not the groups,
not their order, not the distribution kept for a name); finished trials never change. So
``calculate`` here adds only the trials it has not seen and copies the result only when it
changed: the same groups in the same order, hence the same samples. It is installed only
after it agreed with Optuna's own on a replayed sequence of trials with conditional
parameters. Likewise ``TPESampler._get_internal_repr`` (a trial's params in the internal
representation, redone for every trial on every ask, twice per parameter group) keeps each
finished trial's row per search space (~0.4 -> ~0.15 ms a call at trial 100), and
``_split_trials`` (below/above, redone for each parameter group of one ask) answers a
second call with the very same trial objects in the same states from memory (Optuna's
storages write a changed trial as a new object). Each saves ~0.5 ms an ask at trial 100
(7.2 -> 5.7 ms an ask for the three, alternating asks in one process).
tests/test_fast_tpe.py checks that a seeded study samples exactly the same points with and
without each of the three.
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
    try:
        patches = _patches()
    except ImportError:  # a later Optuna moved them: TPE runs as shipped
        patches = []
    for owner, name, fast, agrees, store in patches:
        _swap(owner, name, fast, agrees, store)
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
    if _CALCULATE or _ROWS or _SPLIT:  # (their modules exist then)
        for owner, name, _, _, store in _patches():
            if store:
                setattr(owner, name, store.pop())
    _LAST_SPLIT.clear()


def _patches() -> list[tuple]:
    """(owner, attribute, our replacement, its check against Optuna's own, the list that
    holds Optuna's own while replaced) of the three per-ask patches."""
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe import sampler
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace as G

    return [
        (G, "calculate", incremental_calculate,
         lambda original: _calculate_agrees(G, original, incremental_calculate), _CALCULATE),
        (TPESampler, "_get_internal_repr", cached_internal_repr,
         lambda original: _rows_agree(original, cached_internal_repr), _ROWS),
        (sampler, "_split_trials", remembered_split, _split_agrees, _SPLIT),
    ]  # fmt: skip


def _swap(owner, name: str, fast, agrees, store: list) -> bool:
    """Put ``fast`` at ``owner.name`` if ``agrees(Optuna's own)``, keeping Optuna's own in
    ``store`` (once: True when ours is in place)."""
    if store:
        return True
    original = getattr(owner, name, None)
    if original is None or not agrees(original):
        return False
    store.append(original)
    setattr(owner, name, fast)
    return True


def _split_agrees(original) -> bool:
    """Optuna's split is a function of its arguments (the same answer twice), and
    remembered_split gives it for a study of complete, pruned and running trials, asked
    twice (the second from memory), and again after one of them finished (a new object,
    as every Optuna storage writes a changed trial)."""
    from types import SimpleNamespace

    from optuna.distributions import FloatDistribution
    from optuna.study import StudyDirection
    from optuna.trial import TrialState, create_trial

    dist = {"x": FloatDistribution(0, 1)}
    rng = np.random.default_rng(2)
    _SPLIT.append(original)
    try:
        trials = []
        for i in range(20):
            state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING][i % 3]
            trial = create_trial(params={"x": float(rng.random())}, distributions=dist,
                                 value=float(rng.random()) if i % 3 == 0 else None,
                                 intermediate_values={1: float(rng.random())} if i % 3 == 1
                                 else None, state=state)
            trial.number = i
            trials.append(trial)
        study = SimpleNamespace(direction=StudyDirection.MINIMIZE,
                                directions=[StudyDirection.MINIMIZE])
        finished = create_trial(params={"x": 0.5}, distributions=dist, value=-1.0)
        finished.number = 2
        if original(study, trials, 4) != original(study, list(trials), 4):
            return False  # not a function of its arguments: nothing to remember
        for ts in (trials, list(trials), trials[:2] + [finished] + trials[3:]):
            want = original(study, ts, 4)
            if remembered_split(study, ts, 4) != want:
                return False
    except Exception:  # noqa: BLE001 - a changed Optuna: keep its own
        return False
    finally:
        _SPLIT.clear()
        _LAST_SPLIT.clear()
    return True


def _rows_agree(original, fast) -> bool:
    """Both give equal arrays (values and dtypes) for finished trials with and without
    the space's params, a running trial, and a second call (rows from the cache)."""
    from types import SimpleNamespace

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState, create_trial

    dists = {"x": FloatDistribution(-1, 1), "n": IntDistribution(1, 64, log=True),
             "c": CategoricalDistribution(["a", "b", True])}
    rng = np.random.default_rng(1)
    try:
        trials = []
        for i in range(12):
            params = {"x": float(rng.uniform(-1, 1)), "n": int(rng.integers(1, 65)),
                      "c": ["a", "b", True][i % 3]}
            keep = dists if i % 4 else {k: d for k, d in dists.items() if k != "n"}
            state = TrialState.RUNNING if i == 5 else TrialState.COMPLETE
            trials.append(create_trial(params={k: params[k] for k in keep}, distributions=keep,
                                       value=None if i == 5 else float(i), state=state))
        study = SimpleNamespace()  # read only for a running trial's relative params
        a, b = TPESampler(multivariate=True), TPESampler(multivariate=True)
        for space in (dists, {"x": dists["x"]}, dists):
            want, got = original(a, trials, space, study), fast(b, trials, space, study)
            if list(want) != list(got) or not all(
                    np.array_equal(want[k], got[k]) and want[k].dtype == got[k].dtype
                    for k in want):
                return False
    except Exception:  # noqa: BLE001 - a changed Optuna: keep its own
        return False
    return True


_ROWS: list = []  # Optuna's own TPESampler._get_internal_repr while replaced


def cached_internal_repr(self, trials, search_space, study) -> dict[str, np.ndarray]:
    """``TPESampler._get_internal_repr`` with each finished trial's row (its params in the
    search space's internal representation, or none when it lacks one) computed once per
    search space and trial object: a pure function of the trial's params, which a finished
    trial never changes. Running trials (the constant liar's) are read every time."""
    import weakref

    space = tuple(search_space.items())
    rows = self.__dict__.setdefault("_nnsweep_rows", {}).setdefault(space, {})
    values: dict[str, list[float]] = {name: [] for name in search_space}
    lists = list(values.values())
    for trial in trials:
        finished = trial.state.is_finished()
        cached = rows.get(id(trial)) if finished else None
        if cached is not None and cached[0]() is trial:
            row = cached[1]
        else:
            params = self._get_params(trial, study)
            row = None
            if search_space.keys() <= params.keys():
                row = tuple(d.to_internal_repr(params[name]) for name, d in space)
            if finished:
                rows[id(trial)] = (weakref.ref(trial), row)
        if row is not None:
            for column, value in zip(lists, row):
                column.append(value)
    return {k: np.asarray(v) for k, v in values.items()}


_SPLIT: list = []  # Optuna's own samplers._tpe.sampler._split_trials while replaced
_LAST_SPLIT: list = []  # [(study, n_below, trials, their states), (below, above)]


def remembered_split(study, trials, n_below: int):
    """Optuna's ``_split_trials``, answered again without work when called with the very
    same study, ``n_below`` and trial objects in the same states (each parameter group of
    one ask splits the same trials). What it reads of a finished trial (values, reports,
    constraints) never changes, and of a running trial only its state; the key holds the
    objects, so their ids cannot be taken by others meanwhile."""
    states = [t.state for t in trials]
    if _LAST_SPLIT:
        (s, n, ts, sts), (below, above) = _LAST_SPLIT
        if s is study and n == n_below and len(ts) == len(trials) and sts == states and all(
                a is b for a, b in zip(ts, trials)):
            return list(below), list(above)
    below, above = _SPLIT[0](study, trials, n_below)
    _LAST_SPLIT[:] = [(study, n_below, list(trials), states), (list(below), list(above))]
    return below, above


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
