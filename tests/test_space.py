"""Search spaces: Hydra sweep grammar -> Optuna distributions, and bad spaces."""

from __future__ import annotations

import optuna
import optuna.distributions as D
import pytest

from app.compose import CONF_DIR
from core.config import ConfigError
from sweeper.space import load_space, parse_space, to_distribution


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
    from app.compose import compose_experiment

    for path in sorted((CONF_DIR / "hparams_search").glob("*.yaml")):
        space = load_space(path.stem, CONF_DIR)
        assert space.overrides == [f"hparams_search={path.stem}"]
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


# ---------------------------------------------------------------- bad space files: one line each


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("params: 3\n", r"^search\.params: .* has the value 3; allowed: a mapping of key: expr"),
        ("params:\n  - optimizer\n", r"^search\.params: .* has a list; allowed: a mapping"),
        ("- params: {}\n", r"^search: .* holds a list; allowed: a mapping with keys params, "),
        ("- a\n- b\n", r"^search: .* holds a list"),
        ("layers: 3\n", r"^search\.layers: .* has the value 3; allowed: a mapping with depth"),
        ("overrides: trainer.epochs=3\nparams:\n  optimizer: choice(sgd, adam)\n",
         r"^search\.overrides: .* has the value 'trainer\.epochs=3'; allowed: a list"),
        ("params:\n  optimizer: choice(sgd, adam)\nmetric: acc\n", r"^search\.metric: unknown value"),
        ("params:\n  optimizer: choice(sgd, adam)\ndirection: up\n", r"^search\.direction: unknown"),
        ("params: [\n", r"^search\.space: cannot read .* as YAML \(ParserError"),
        ("params:\n  x: ${oops}\n", r"^search\.space: cannot read .* \(InterpolationKeyError"),
        ("params:\n  optimizer.lr: interval(0, inf)\n", r"optimizer\.lr: .* bound that is not finite"),
        ("params:\n  trainer.batch_size: range(16, 64, 0)\n", r"batch_size: .* has step 0"),
    ],
)
def test_bad_space_file_is_one_clear_error(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(str(path), CONF_DIR)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "",  # an empty file
        "params:\n",
        "params: {}\n",
        "overrides:\n  - trainer.epochs=3\n",
        "params:\n  optimizer: adam\n  optimizer.lr: 0.01\n",  # fixed values only
        "params:\n  optimizer: choice(adam)\n  trainer.batch_size: range(32, 33)\n",  # one value each
    ],
)
def test_space_with_nothing_to_search_is_refused(tmp_path, text):
    """N trials of one and the same model: refuse instead of running them."""
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^search\.params: .* has nothing to search"):
        load_space(str(path), CONF_DIR)


def test_unreadable_space_file_is_one_clear_error(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"^search\.space: cannot read .*IsADirectoryError"):
        load_space(str(tmp_path / "dir.yaml"), CONF_DIR)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00params")
    with pytest.raises(ConfigError, match=r"^search\.space: cannot read .*UnicodeDecodeError"):
        load_space(str(tmp_path / "bin.yaml"), CONF_DIR)


def test_a_fixed_value_beside_a_searched_one_is_fine():
    space = parse_space({"params": {"layers.hidden": [64, 32], "optimizer": "choice(sgd, adam)"}})
    assert space.params["layers.hidden"] == [64, 32]
    only_layers = parse_space({"layers": {"depth": "range(1, 3)", "units": "choice(8)"}})
    assert only_layers.depth is not None
