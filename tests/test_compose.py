"""The fast composition path (sweeper.compose) against a full Hydra compose, field by field."""

from __future__ import annotations

import dataclasses
import pickle

import optuna
import pytest
from omegaconf import DictConfig, OmegaConf

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


def _same(got, expected) -> None:
    """Equal field by field, and of the same types (1 and 1.0 compare equal)."""
    assert fields(got) == fields(expected)
    assert {k: type(v) for k, v in fields(got).items()} == \
        {k: type(v) for k, v in fields(expected).items()}
    assert [type(u) for u in got.layers.hidden] == [type(u) for u in expected.layers.hidden]


@pytest.mark.parametrize("values", [
    ["optimizer.lr=1"],  # an int for a float field: float(1)
    ["optimizer.lr='0.5'"], ["trainer.batch_size='32'"],  # strings OmegaConf converts
    ["optimizer.clip_norm=null"], ["optimizer.clip_norm=2"], ["optimizer.clip_norm=0.5"],
    ["engine.threads=1"], ["engine.threads=1", "engine.threads=null"], ["engine.device=0"],
    ["optimizer.clip_norm=1", "optimizer.clip_norm=null"],
    ["data.standardize=1"], ["data.standardize=yes"], ["data.standardize=false"],
    ["layers.activation=tanh"], ["layers.activation='tanh'"],
    ["layers.hidden=[]"], ["layers.hidden=[8,'16']"], ["layers.hidden=[8, 16]"],
    ["optimizer.lr=${optimizer.momentum}"], ["layers.hidden=[4,${trainer.batch_size}]"],
    ["optimizer.lr=0.1", "optimizer.lr=0.2"],  # the last wins
    ["trainer.early_stopping.patience=3", "trainer.early_stopping.enabled=false"],
    ["optimizer.lr=1e-05", "regularization.l2=9.667896295270508e-05", "trainer.epochs=7"],
    ["data=file", "data.path=nowhere.npz"],  # a cached config that is no experiment alone
])
def test_values_of_every_kind_equal_a_full_compose(values):
    """Values the direct path converts (int, float, bool, str, list[int]) and values it
    leaves to OmegaConf (strings for numbers, null, interpolations): all as a full compose."""
    overrides = ["optimizer=adamw"] + values
    cache = ComposeCache()
    cache.experiment(["optimizer=adamw", "optimizer.lr=0.3"])  # the direct path is set up
    _same(cache.experiment(overrides), compose_experiment(overrides)[1])


@pytest.mark.parametrize("values", [
    ["optimizer.lr=abc"], ["optimizer.lr=null"], ["optimizer.lr=1e999"], ["optimizer.lr=-0.5"],
    ["trainer.batch_size=16.5"], ["trainer.batch_size=true"], ["layers.hidden=[8.0]"],
    ["layers.hidden=[8,-1]"], ["layers.hidden=null"], ["data.standardize=maybe"],
    ["data.val_fraction=0.6", "data.test_fraction=0.5"], ["optimizer.lr=${nowhere.lr}"],
    ["layers.activation=${optimizer.name}"], ["optimizer.lr=???"], ["optimizer.lr={a: 1}"],
    ["engine.threads=2.0"], ["engine.threads=0"], ["engine.threads=true"],
])
def test_bad_values_fail_as_a_full_compose(values):
    overrides = ["optimizer=adamw"] + values
    cache = ComposeCache()
    cache.experiment(["optimizer=adamw"])
    with pytest.raises(ConfigError) as full:
        compose_experiment(overrides)
    with pytest.raises(ConfigError) as fast:
        cache.experiment(overrides)
    assert str(fast.value) == str(full.value)


@pytest.mark.parametrize("extra", [["engine=cpu"], ["engine.threads=1"]])
def test_trials_of_every_space_take_the_direct_path(monkeypatch, extra):
    """The points of test_random_points_of_every_space_equal_a_full_compose are answered
    without OmegaConf (so that test checks the direct path), also with the override a
    worker of several adds (engine.threads=1, a field that is None in the config)."""
    answers = []
    real = sweeper.compose._Direct.experiment

    def spy(self, values):
        answers.append(real(self, values))
        return answers[-1]

    monkeypatch.setattr(sweeper.compose._Direct, "experiment", spy)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in SPACES:
        space, cache = load_space(name, CONF_DIR), ComposeCache()
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(6):
            overrides = space.sample(study.ask()) + extra
            got = cache.experiment(overrides)
            assert fields(got) == fields(compose_experiment(overrides)[1])
    assert answers and all(a is not None for a in answers)


def test_an_interpolation_in_the_cached_config_follows_the_sampled_value(monkeypatch):
    """A config with ``scheduler.max_lr: ${optimizer.lr}`` has no direct path: the trial's
    lr reaches max_lr, as in OmegaConf's own update of the same config."""
    from omegaconf import OmegaConf

    from app.compose import to_experiment

    def planted(overrides, **kwargs):
        cfg = compose_config(overrides, **kwargs)
        cfg.scheduler.max_lr = "${optimizer.lr}"
        return cfg

    monkeypatch.setattr(sweeper.compose, "compose_config", planted)
    cache = ComposeCache()
    overrides = ["scheduler=cyclic", "optimizer.lr=0.125", "trainer.epochs=3"]
    got = cache.experiment(overrides)
    reference = planted(["scheduler=cyclic"])
    for text in overrides[1:]:
        key, value = text.split("=")
        OmegaConf.update(reference, key, float(value) if "." in value else int(value))
    assert got.scheduler.max_lr == 0.125
    _same(got, to_experiment(reference))
    assert sweeper.compose._Direct.of(planted(["scheduler=cyclic"])) is None


def _hydra_parse(text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([text])[0]


def _floats():
    import random

    rng = random.Random(0)
    some = [rng.uniform(-1, 1) * 10 ** rng.uniform(-300, 300) for _ in range(300)]
    some += [rng.random() for _ in range(100)] + [float(rng.randint(-10**6, 10**6)) for _ in range(50)]
    return some + [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e16, 1e-05, 0.1, 123456.789]


@pytest.mark.parametrize("text", [
    "trainer.epochs=7", "trainer.epochs=-3", "trainer.epochs=0", f"a.b={10**40}",
    "layers.hidden=[385,244]", "layers.hidden=[7]", "layers.hidden=[0,-1,12]",
    "optimizer.lr=1e+16", "optimizer.lr=2E-3", "x_1.y_2.z=4", "optimizer.lr=-0.0",
])
def test_number_overrides_are_read_as_hydra_reads_them(text):
    got, want = sweeper.compose._number_override(text), _hydra_parse(text)
    assert got is not None
    assert got == want
    assert repr(got.value()) == repr(want.value())  # same types, also of list items and -0.0


def test_float_texts_are_read_as_hydra_reads_them():
    """~460 floats as sweeper.space writes them (repr), from 1e-300 to 1e300 and the edges."""
    for text in (f"optimizer.lr={x!r}" for x in _floats()):
        got, want = sweeper.compose._number_override(text), _hydra_parse(text)
        assert got is not None, text
        assert (got, repr(got.value())) == (want, repr(want.value())), text


@pytest.mark.parametrize("text", [
    "optimizer.lr=inf", "optimizer.lr=nan", "optimizer.lr=-inf", "optimizer.lr=1_000",
    "optimizer.lr=1.", "optimizer.lr=.5", "optimizer.lr= 1", "optimizer.lr=01",
    "optimizer.lr=+1", "layers.hidden=[1, 2]", "layers.hidden=[]", "layers.hidden=[1,2.0]",
    "+optimizer.lr=1", "~optimizer.lr", "optimizer=1", "optimizer.lr=${a.b}",
    "optimizer.lr=1,2", "a-b.c=1", "optimizer.lr='1'", "optimizer@x.lr=1",
])
def test_other_texts_are_left_to_hydras_parser(text):
    assert sweeper.compose._number_override(text) is None


# ---------------------------------------------------------------- the compose cache


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    """compose_config on a copy of conf/ (editable), with an empty memo and disk cache."""
    import shutil

    import app.compose as C

    copy = tmp_path / "conf"
    shutil.copytree(C.CONF_DIR, copy)
    monkeypatch.setattr(C, "CONF_DIR", copy)
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(C, "_MEMO", {})
    monkeypatch.setattr(C, "_STAMP", [None])
    C._fingerprint.cache_clear()
    yield copy
    C._fingerprint.cache_clear()


def _fresh(overrides):
    import app.compose as C

    C._MEMO.clear()
    return compose_config(overrides)


def test_a_cached_composition_equals_a_fresh_compose(conf_copy, tmp_path):
    """Read back from disk in a 'new process' (empty memo): the same config, struct flag and
    schema type as Hydra's own compose of the same overrides."""
    import app.compose as C

    overrides = ["hparams_search=default", "optimizer=adam", "optimizer.lr=0.02"]
    first = compose_config(overrides)
    assert len(list((tmp_path / "cache" / "compose").glob("*.pkl"))) == 1
    cached = _fresh(overrides)
    hydra_own = C._compose(overrides, "config")
    for cfg in (first, cached):
        assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(hydra_own)
        assert OmegaConf.is_struct(cfg) and OmegaConf.get_type(cfg) is OmegaConf.get_type(hydra_own)
    cached.optimizer.lr = 0.5  # each caller owns its copy
    assert compose_config(overrides).optimizer.lr == 0.02


def test_editing_a_conf_file_is_seen_by_this_process_and_the_next(conf_copy):
    """The fingerprint covers the YAML files: an edited option composes afresh, in the
    process that kept the old one (its memo) and in a new one (the disk)."""
    import app.compose as C

    assert compose_config(["optimizer=adam"]).optimizer.beta1 == 0.9
    path = conf_copy / "optimizer" / "adam.yaml"
    path.write_text(path.read_text().replace("beta1: 0.9", "beta1: 0.5"))
    assert compose_config(["optimizer=adam"]).optimizer.beta1 == 0.5
    path.write_text(path.read_text().replace("beta1: 0.5", "beta1: 0.25"))
    C._STAMP[0] = C._stamp()  # a new process: no memo, the edit not seen by a stamp
    C._fingerprint.cache_clear()
    assert _fresh(["optimizer=adam"]).optimizer.beta1 == 0.25


def test_a_torn_cache_file_is_composed_again(conf_copy, tmp_path):
    compose_config(["optimizer=sgd"])
    (path,) = (tmp_path / "cache" / "compose").glob("*.pkl")
    path.write_bytes(path.read_bytes()[:50])
    assert _fresh(["optimizer=sgd"]).optimizer.name == "sgd"
    assert isinstance(pickle.loads(path.read_bytes()), DictConfig)  # rewritten whole


def test_errors_are_not_cached_and_read_the_same(conf_copy):
    for _ in range(2):
        with pytest.raises(ConfigError, match="optimizer"):
            compose_config(["optimizer=nonesuch"])


def test_an_unusable_cache_folder_only_costs_the_cache(conf_copy, tmp_path, monkeypatch):
    """A cache path that cannot be a folder (here a file): every compose works, none kept."""
    import app.compose as C

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(C.CACHE_ENV, str(blocker / "cache"))
    assert _fresh(["optimizer=adam"]).optimizer.name == "adam"
    monkeypatch.setenv(C.CACHE_ENV, "")  # set empty: no disk cache at all
    assert C.cache_dir() is None
    assert _fresh(["optimizer=adam"]).optimizer.name == "adam"


def test_the_disk_cache_keeps_the_recently_used_half(conf_copy, tmp_path, monkeypatch):
    """Past CACHE_FILES files the least recently used go; a file read back counts as used."""
    import os

    import app.compose as C

    monkeypatch.setattr(C, "CACHE_FILES", 4)
    folder = tmp_path / "cache" / "compose"
    names = ["sgd", "adam", "adamw", "momentum"]
    for i, name in enumerate(names):
        compose_config([f"optimizer={name}"])
        path = C._disk_path(("config", f"optimizer={name}"))
        os.utime(path, (1000 + i, 1000 + i))  # written in this order, a second apart
    _fresh(["optimizer=sgd"])  # read back: now the most recently used
    assert len(list(folder.glob("*.pkl"))) == 4
    compose_config(["optimizer=nesterov"])  # the fifth: 3 least recently used go
    left = {p.name for p in folder.glob("*.pkl")}
    want = {C._disk_path(("config", f"optimizer={n}")).name for n in ("sgd", "nesterov")}
    assert left == want


def test_a_config_search_path_is_never_cached_on_disk(conf_copy, tmp_path):
    """Files found through hydra.searchpath lie outside the fingerprint: composed afresh."""
    extra = tmp_path / "extra" / "optimizer"
    extra.mkdir(parents=True)
    (extra / "mine.yaml").write_text("name: sgd\nlr: 0.5\n")
    overrides = ["optimizer=mine", f"hydra.searchpath=[file://{tmp_path / 'extra'}]"]
    assert _fresh(overrides).optimizer.lr == 0.5
    (extra / "mine.yaml").write_text("name: sgd\nlr: 0.25\n")
    assert _fresh(overrides).optimizer.lr == 0.25
    assert not list((tmp_path / "cache").rglob("*.pkl"))
