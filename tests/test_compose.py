"""The fast composition path (sweeper.compose) against a full Hydra compose, field by field."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

import sweeper.compose
from app.compose import CONF_DIR, compose_config, compose_experiment
from core.config import ConfigError
from sweeper.compose import ComposeCache
from sweeper.space import load_space

SPACES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


def fields(obj, prefix=""):
    """Every leaf field of a dataclass tree as {dotted name: value}."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


@pytest.mark.parametrize("space_name", SPACES)
def test_random_points_of_every_space_equal_a_full_compose(space_name):
    """Values are set on the cached config and put back: equal configs point after point
    also prove that nothing leaks from one point into the next."""
    space = load_space(space_name, CONF_DIR)
    cache = ComposeCache()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=len(space_name)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(12):
        overrides = space.sample(study.ask()) + ["engine=cpu"]
        try:
            expected = fields(compose_experiment(overrides)[1])
        except ConfigError as e:
            with pytest.raises(ConfigError, match=str(e)[:40]):
                cache.experiment(overrides)
            continue
        got = fields(cache.experiment(overrides))
        assert got == expected
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


@pytest.mark.parametrize("overrides", [
    ["optimizer=foo"], ["trainer.epoch=5"], ["trainer.batch_size=abc"], ["optimizer.lr=-1"],
    ["layers.hidden=[0]"], ["+trainer.extra=1"], ["data=moons", "data.noise=-0.1"],
    ["optimizer=sgd", "optimizer.lr=abc"], ["trainer.batch_size=16.5"],
])
def test_errors_read_exactly_as_a_full_compose(overrides):
    with pytest.raises(ConfigError) as full:
        compose_experiment(overrides)
    cache = ComposeCache()
    cache.experiment(["optimizer=sgd"])  # a cached base exists for the same group choice
    with pytest.raises(ConfigError) as fast:
        cache.experiment(overrides)
    assert str(fast.value) == str(full.value)


@pytest.fixture
def composed(monkeypatch) -> list[list[str]]:
    """The overrides of every full Hydra compose the fast path makes, in order."""
    calls = []

    def counting(overrides, **kwargs):
        calls.append(list(overrides))
        return compose_config(overrides, **kwargs)

    monkeypatch.setattr(sweeper.compose, "compose_config", counting)
    return calls


def test_group_choices_compose_once_and_values_never_leak_between_trials(composed):
    cache = ComposeCache()
    a = cache.experiment(["optimizer=sgd", "optimizer.lr=0.5", "layers.hidden=[7]"])
    b = cache.experiment(["optimizer=sgd"])
    assert (a.optimizer.lr, a.layers.hidden) == (0.5, [7])
    assert b == compose_experiment(["optimizer=sgd"])[1]  # the cached base was not changed
    assert composed == [["optimizer=sgd"]]  # one Hydra compose for both


@pytest.mark.parametrize("overrides", [
    ["optimizer=adam", "scheduler=cosine"],
    ["optimizer=cosine", "scheduler=step"],  # cosine also picks a scheduler: explicit one wins
    ["scheduler=step", "optimizer=cosine", "optimizer.lr=0.3"],
    ["optimizer=plateau", "layers=wide"],
    ["hparams_search=default", "optimizer=rmsprop", "scheduler=plateau", "layers.activation=tanh"],
    ["hparams_search=lr", "optimizer=nesterov", "scheduler=cyclic", "data=moons"],
    ["data=spirals", "layers=deep", "regularization=dropout", "trainer=quick", "optimizer=adamw"],
])
def test_combinations_assembled_from_group_nodes_equal_a_full_compose(overrides):
    """Each combination after others that share its choices (so it is assembled from cached
    parts, or learns that a choice is not local) equals a full compose."""
    cache = ComposeCache()
    for warm in (["optimizer=sgd", "scheduler=step"], ["optimizer=cosine", "layers=wide"],
                 ["hparams_search=default", "optimizer=adam", "scheduler=cosine"], overrides):
        cache.experiment(warm)
    got = fields(cache.experiment(overrides))
    assert got == fields(compose_experiment(overrides)[1])


def test_local_choices_compose_once_each(composed):
    """5 optimizers x 4 schedulers: 12 composes, not 20: the skeleton and a choice per group
    and option, plus, the first time, the plain config and the whole first combination
    (composed while learning that hparams_search=default is not a local choice)."""
    cache = ComposeCache()
    skeleton = ["hparams_search=default"]
    for opt in ("momentum", "nesterov", "adam", "adamw", "rmsprop"):
        for sched in ("constant", "cosine", "step", "plateau"):
            overrides = skeleton + [f"optimizer={opt}", f"scheduler={sched}", "optimizer.lr=0.01"]
            assert fields(cache.experiment(overrides)) == fields(compose_experiment(overrides)[1])
    assert len(composed) == 2 + 1 + 5 + 4, composed


def test_values_set_in_place_are_put_back():
    """experiment() sets a trial's values on the cached config: the next trial with the same
    group choices sees none of them."""
    cache = ComposeCache()
    a = cache.experiment(["optimizer=sgd", "optimizer.lr=0.5", "layers.hidden=[7]",
                          "regularization.dropout=0.3"])
    assert (a.optimizer.lr, a.layers.hidden, a.regularization.dropout) == (0.5, [7], 0.3)
    expected = compose_experiment(["optimizer=sgd"])[1]
    assert cache.experiment(["optimizer=sgd"]) == expected
    # a bad value fails like a full compose and leaves nothing behind either
    with pytest.raises(ConfigError) as bad:
        cache.experiment(["optimizer=sgd", "optimizer.lr=0.25", "trainer.batch_size=abc"])
    with pytest.raises(ConfigError) as full:
        compose_experiment(["optimizer=sgd", "optimizer.lr=0.25", "trainer.batch_size=abc"])
    assert str(bad.value) == str(full.value)
    assert cache.experiment(["optimizer=sgd"]) == expected
