"""Search spaces: Hydra sweep grammar -> Optuna distributions, and bad spaces."""

from __future__ import annotations

import optuna
import optuna.distributions as D
import pytest

from core.config import ConfigError
from sweeper.space import load_space, parse_space, to_distribution
from conf.schema import CONF_DIR


@pytest.mark.parametrize(
    "expr,expected",
    [
        ("choice(sgd, adam)", D.CategoricalDistribution(["sgd", "adam"])),
        ("choice(16, 32, 64)", D.CategoricalDistribution([16, 32, 64])),
        ("range(1, 4)", D.IntDistribution(1, 3)),  # stop is exclusive, as in Hydra
        ("range(0, 10, 3)", D.IntDistribution(0, 9, step=3)),
        ("range(0.1, 0.5, 0.1)", D.FloatDistribution(0.1, 0.4, step=0.1)),
        ("interval(0.0, 0.5)", D.FloatDistribution(0.0, 0.5)),
        ("tag(log, interval(1e-4, 1e-1))", D.FloatDistribution(1e-4, 1e-1, log=True)),
        ("int(interval(16, 256))", D.IntDistribution(16, 256)),
        ("tag(log, int(interval(16, 256)))", D.IntDistribution(16, 256, log=True)),
    ],
)
def test_grammar_to_distribution(expr, expected):
    got = to_distribution("k", expr, "search.params")
    assert type(got) is type(expected)
    if isinstance(expected, D.FloatDistribution) and expected.step:
        assert got.low == pytest.approx(expected.low) and got.high == pytest.approx(expected.high)
        assert got.step == pytest.approx(expected.step)
    else:
        assert got == expected


def test_plain_value_is_fixed():
    assert to_distribution("k", 3, "search.params") == 3


@pytest.mark.parametrize(
    "data,match",
    [
        ({"params": {"optimizer.lr": "interval(1e-4"}}, "search.params.optimizer.lr: cannot parse"),
        ({"params": {"optimizer.lr": "tag(log, interval(0, 1))"}}, "search.params.optimizer.lr"),
        ({"params": {"x": "range(5, 1)"}}, "search.params.x"),
        ({"paramz": {}}, "unknown key 'paramz'"),
        ({"layers": {"depth": "range(1, 3)"}}, "search.layers"),
    ],
)
def test_bad_space_names_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_space(data)


def test_conditional_space_samples_one_width_per_layer():
    space = parse_space({"layers": {"depth": "range(1, 4)", "units": "int(interval(4, 8))"},
                         "params": {"optimizer": "choice(sgd, adam)", "optimizer.lr": "tag(log, interval(1e-3, 1e-1))"}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(30):
        trial = study.ask()
        overrides = space.sample(trial)
        depth = trial.params["layers.depth"]
        depths.add(depth)
        widths = [trial.params[f"layers.units_{i}"] for i in range(depth)]
        assert f"layers.hidden=[{','.join(map(str, widths))}]" in overrides
        assert not any(f"layers.units_{i}" in trial.params for i in range(depth, 4))
        # the group choice comes before the value override that lands on it
        assert overrides.index(f"optimizer={trial.params['optimizer']}") < next(
            i for i, o in enumerate(overrides) if o.startswith("optimizer.lr="))
        study.tell(trial, 0.0)
    assert depths == {1, 2, 3}


def test_overrides_for_known_params_round_trip():
    space = load_space("quick", CONF_DIR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    sampled = space.sample(trial)
    assert space.overrides_for(trial.params) == sampled


def test_every_shipped_space_loads_and_composes():
    from conf.schema import compose_experiment

    for path in sorted((CONF_DIR / "search").glob("*.yaml")):
        space = load_space(str(path), CONF_DIR)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(3):
            _, cfg = compose_experiment(space.sample(study.ask()))
            assert cfg.trainer.epochs >= 1


def test_unknown_space_lists_available():
    with pytest.raises(ConfigError, match="available: .*default.*quick"):
        load_space("nope", CONF_DIR)


def test_grid_needs_a_finite_space():
    with pytest.raises(ConfigError, match="search.params.optimizer.lr: an interval"):
        parse_space({"params": {"optimizer.lr": "interval(0.1, 0.2)"}}).grid()
    grid = parse_space({"params": {"optimizer": "choice(sgd, adam)", "trainer.batch_size": "range(16, 49, 16)"}}).grid()
    assert grid == {"optimizer": ["sgd", "adam"], "trainer.batch_size": [16, 32, 48]}
