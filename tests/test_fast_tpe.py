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
