"""sweeper.fast_tpe: SciPy's truncated-normal helpers in place of Optuna's pure-Python ones."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sweeper import fast_tpe


@pytest.fixture
def restored():
    yield
    fast_tpe.uninstall()


def _originals():
    from optuna.samplers._tpe import _truncnorm

    fast_tpe.uninstall()
    return {name: getattr(_truncnorm, name) for name in ("_log_ndtr", "_ndtr", "erf")}


def test_replacements_agree_with_optunas_own(restored):
    """Optuna's own implementations are the reference: within 1e-12 on both tails."""
    from optuna.samplers._tpe import _truncnorm

    optunas = _originals()
    assert fast_tpe.install()
    x = np.linspace(-30, 30, 2001)
    for name, reference in optunas.items():
        fast = getattr(_truncnorm, name)
        assert fast is not reference
        np.testing.assert_allclose(fast(x), np.asarray(reference(x), float), rtol=1e-8, atol=1e-12)
    # the log-mass TPE evaluates, on intervals left of, around and right of 0
    a = np.array([-12.0, -3.0, -0.5, 0.2, 4.0])
    b = np.array([-11.0, -1.0, 0.7, 2.0, 9.0])
    fast_mass = _truncnorm._log_gauss_mass(a, b)
    fast_tpe.uninstall()
    np.testing.assert_allclose(fast_mass, _truncnorm._log_gauss_mass(a, b), rtol=1e-9)


def test_install_is_idempotent_and_uninstall_restores(restored):
    from optuna.samplers._tpe import _truncnorm

    originals = _originals()
    assert fast_tpe.install() and fast_tpe.install()
    fast_tpe.uninstall()
    assert all(getattr(_truncnorm, name) is f for name, f in originals.items())


def test_a_changed_helper_is_left_alone(restored, monkeypatch):
    """If Optuna's helper no longer computes the same thing, nothing is replaced."""
    from optuna.samplers._tpe import _truncnorm

    _originals()
    monkeypatch.setattr(_truncnorm, "_ndtr", lambda a: np.asarray(a) * 0.0)
    assert not fast_tpe.install()
    assert not fast_tpe._REPLACED


def _tpe_points(n: int) -> list[dict]:
    sampler = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        return (x - 1) ** 2 + np.log10(lr) ** 2 / 10 + (kind != "b")

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def test_tpe_samples_the_same_points(restored):
    """Same seed, same points with and without the replacement (the helpers agree to far
    below what the sampler's choices depend on)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _originals()
    shipped = _tpe_points(25)
    assert fast_tpe.install()
    fast = _tpe_points(25)
    for a, b in zip(shipped, fast):
        assert a["kind"] == b["kind"]
        assert a["x"] == pytest.approx(b["x"], rel=1e-9) and a["lr"] == pytest.approx(b["lr"], rel=1e-9)


def _stock(monkeypatch, which: str) -> None:
    """Put Optuna's own ``which`` (calculate, rows) back while the rest stays installed."""
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe import sampler
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace

    if which == "calculate":
        monkeypatch.setattr(_GroupDecomposedSearchSpace, "calculate", fast_tpe._CALCULATE[0])
    elif which == "rows":
        monkeypatch.setattr(TPESampler, "_get_internal_repr", fast_tpe._ROWS[0])
    else:
        monkeypatch.setattr(sampler, "_split_trials", fast_tpe._SPLIT[0])


def _default_space_points(n: int) -> list[dict]:
    """A seeded study of the default space as search.py samples it (multivariate, group,
    constant liar, a conditional width per layer), two trials running at a time and finishing
    out of order, every fifth one pruned."""
    from app.compose import CONF_DIR
    from sweeper.space import load_space

    space = load_space("default", CONF_DIR)
    sampler = optuna.samplers.TPESampler(seed=7, multivariate=True, group=True,
                                         constant_liar=True, n_startup_trials=8)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    running = []
    for i in range(n):
        trial = study.ask()
        space.sample(trial)
        running.append(trial)
        if len(running) == 2:
            for t in reversed(running):
                p = t.params
                value = -abs(np.log10(p["optimizer.lr"]) + 2.5) - p["regularization.dropout"] \
                    + (p["layers.depth"] == 2) * 0.3 + (p["optimizer"] == "adam") * 0.2
                if t.number % 5 == 0:
                    t.report(value, 1)
                    study.tell(t, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(t, value)
            running = []
    return [t.params for t in study.trials]


@pytest.mark.parametrize("which", ["calculate", "rows", "split"])
def test_each_exact_replacement_samples_exactly_the_same_points(restored, monkeypatch, which):
    """Stock Optuna is the reference: with Optuna's own group decomposition (or rows of
    internal values, or split of the trials) the same seed gives the same points as with
    ours, to the last bit."""
    from optuna.samplers import TPESampler
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fast_tpe.uninstall()
    assert fast_tpe.install()
    assert _GroupDecomposedSearchSpace.calculate is fast_tpe.incremental_calculate
    assert TPESampler._get_internal_repr is fast_tpe.cached_internal_repr
    assert optuna.samplers._tpe.sampler._split_trials is fast_tpe.remembered_split
    fast = _default_space_points(40)
    _stock(monkeypatch, which)
    shipped = _default_space_points(40)
    assert fast == shipped
    assert {len(p) for p in shipped} == {11, 12}  # both depths: two groups were sampled


def test_a_changed_group_decomposition_is_left_alone(restored, monkeypatch):
    """If Optuna's decomposition no longer gives what the incremental one does, it stays."""
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup

    fast_tpe.uninstall()
    stock = _GroupDecomposedSearchSpace.calculate

    def reversed_groups(self, study, use_cache=False):
        group = stock(self, study, use_cache)
        reordered = _SearchSpaceGroup()
        reordered._search_spaces = group.search_spaces[::-1]
        return reordered

    monkeypatch.setattr(_GroupDecomposedSearchSpace, "calculate", reversed_groups)
    fast_tpe.install()
    assert _GroupDecomposedSearchSpace.calculate is reversed_groups


def test_changed_internal_rows_are_left_alone(restored, monkeypatch):
    """If Optuna's _get_internal_repr no longer gives what the cached one does, it stays."""
    from optuna.samplers import TPESampler

    fast_tpe.uninstall()
    stock = TPESampler._get_internal_repr

    def without_last(self, trials, search_space, study):
        return {k: v[:-1] for k, v in stock(self, trials, search_space, study).items()}

    monkeypatch.setattr(TPESampler, "_get_internal_repr", without_last)
    fast_tpe.install()
    assert TPESampler._get_internal_repr is without_last


def test_cached_rows_are_fresh_for_running_trials_and_other_objects(restored):
    """A running trial's row is read each time (its params grow); a finished trial's row is
    kept only for that very object."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    space = {"x": FloatDistribution(0, 1)}
    sampler = optuna.samplers.TPESampler(multivariate=True)
    done = create_trial(params={"x": 0.25}, distributions=space, value=1.0)
    running = create_trial(params={}, distributions={}, state=TrialState.RUNNING)
    rows = fast_tpe.cached_internal_repr(sampler, [done, running], space, None)
    assert rows["x"].tolist() == [0.25]
    running.params, running.distributions = {"x": 0.5}, space
    other = create_trial(params={"x": 0.75}, distributions=space, value=2.0)
    rows = fast_tpe.cached_internal_repr(sampler, [done, running, other], space, None)
    assert rows["x"].tolist() == [0.25, 0.5, 0.75]


def test_a_split_that_is_no_function_of_its_arguments_is_left_alone(restored, monkeypatch):
    """Remembering an answer is only right for a function of the arguments: a split that
    answers differently on a second call (here it alternates) is not replaced."""
    from optuna.samplers._tpe import sampler

    fast_tpe.uninstall()
    stock, calls = sampler._split_trials, []

    def alternating(study, trials, n_below):
        calls.append(1)
        below, above = stock(study, trials, n_below)
        return (above, below) if len(calls) % 2 else (below, above)

    monkeypatch.setattr(sampler, "_split_trials", alternating)
    fast_tpe.install()
    assert sampler._split_trials is alternating


def test_the_split_is_remembered_only_for_the_same_trials_in_the_same_states(restored):
    """A second call with the same objects is answered from memory; a trial that finished
    since (a new object, or the same object in a new state) is split afresh."""
    from types import SimpleNamespace

    from optuna.distributions import FloatDistribution
    from optuna.samplers._tpe import sampler
    from optuna.study import StudyDirection
    from optuna.trial import TrialState, create_trial

    fast_tpe.uninstall()
    stock = sampler._split_trials
    assert fast_tpe.install()
    calls = []
    fast_tpe._SPLIT[0] = lambda *a: calls.append(a) or stock(*a)
    dist = {"x": FloatDistribution(0, 1)}
    trials = [create_trial(params={"x": 0.1 * i}, distributions=dist, value=float(i))
              for i in range(4)]
    trials.append(create_trial(params={"x": 0.5}, distributions=dist, state=TrialState.RUNNING))
    for i, t in enumerate(trials):
        t.number = i
    study = SimpleNamespace(direction=StudyDirection.MAXIMIZE,
                            directions=[StudyDirection.MAXIMIZE])
    first = fast_tpe.remembered_split(study, trials, 2)
    assert fast_tpe.remembered_split(study, list(trials), 2) == first and len(calls) == 1
    trials[4].state, trials[4].values = TrialState.COMPLETE, [9.0]
    below, _ = fast_tpe.remembered_split(study, trials, 2)
    assert len(calls) == 2 and [t.number for t in below] == [3, 4]
    assert fast_tpe.remembered_split(study, trials, 3) and len(calls) == 3
