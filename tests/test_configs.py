"""conf/: every option of every group composes, validates and builds the core objects.

Options are listed from the conf/ folders, so a new YAML file is covered without editing this
file. Composition goes through app.compose.compose_experiment (Hydra's compose API), the same
path the sweeper uses; run.py's @hydra.main composes the same files.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from app.compose import CONF_DIR, compose_experiment, register, to_experiment
from core.config import ConfigError, ExperimentConfig, SchedulerConfig
from core.data import load_dataset
from core.engines import ENGINE_CLASSES, cuda_available, make_engine, resolve_engine
from core.experiment import build, n_outputs, targets

GROUPS = [f.name for f in dataclasses.fields(ExperimentConfig) if dataclasses.is_dataclass(f.default_factory)]  # one conf/ folder each  # noqa: E501
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
OPTIONS_BY_GROUP = {g: [o for gg, o in OPTIONS if gg == g] for g in GROUPS}
STRATEGIES = ["cosine", "cyclic", "plateau"]  # optimizer options that also pick the scheduler
SMALL = ["data.n_samples=120"]  # generated sets only; digits has its 1797 images


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    """A small .npz (X, y) for data=file."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    path = tmp_path_factory.mktemp("data") / "three.npz"
    np.savez(path, X=X, y=(X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1))
    return str(path)


def gpu_or_simulator() -> bool:
    """engine=cuda can run: a GPU, or Numba's CUDA simulator (tests/conftest.py turns it on)."""
    import numba

    return cuda_available() or bool(numba.config.ENABLE_CUDASIM)


def own_values(group: str, option: str) -> dict:
    """The values an option file sets itself (its defaults list removed)."""
    values = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {}
    values.pop("defaults", None)
    return values


def test_defaults_list_names_every_group_scheduler_before_optimizer() -> None:
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    order = [next(iter(d)) for d in defaults if isinstance(d, dict)]
    assert set(GROUPS) | {"hydra", "hparams_search"} == set(order)
    # Hydra applies an override in a group option only to groups listed before that group
    assert order.index("scheduler") < order.index("optimizer")
    assert all(OPTIONS_BY_GROUP[g] for g in GROUPS), "every group folder holds options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group: str, option: str, data_file: str) -> None:
    overrides = [f"{group}={option}", *SMALL]
    if group != "engine":
        overrides.append("engine=numpy")  # the reference engine: no compile time
    if group != "data":
        overrides.append("data=moons")  # 120 points load faster than the digits images
    if (group, option) == ("data", "file"):
        overrides.append(f"data.path={data_file}")
    cfg, exp = compose_experiment(overrides)
    # the option's own values reached the dataclass the core receives
    section = getattr(exp, group)
    for key, value in own_values(group, option).items():
        if f"{group}.{key}" in " ".join(SMALL):
            continue  # shrunk for speed above
        got = getattr(section, key)
        if isinstance(value, dict):
            assert {k: getattr(got, k) for k in value} == value, key
        else:
            assert got == value, f"{group}.{key}"
    assert OmegaConf.to_container(cfg[group]) == dataclasses.asdict(section)
    # the core objects: data set, network spec + initial parameters, engine
    ds = load_dataset(exp.data, dtype=exp.trainer.dtype)
    spec, params = build(exp, ds)
    assert params.shape == (spec.n_params,) and np.all(np.isfinite(params))
    assert spec.n_in == ds.n_features
    if exp.engine.name == "cuda" and not ("cuda" in ENGINE_CLASSES and gpu_or_simulator()):
        with pytest.raises(ConfigError, match=r"^engine\.name: .*cuda"):
            resolve_engine(exp.engine.name)
        return
    assert resolve_engine(exp.engine.name) in ENGINE_CLASSES
    if group == "engine":
        return  # building a compiled engine is its own test suite's job
    engine = make_engine(exp, spec, params)
    try:
        T = targets(ds.val.y, spec.loss, n_outputs(spec.loss, ds), exp.trainer.dtype)
        loss, _ = engine.evaluate(ds.val.X, T)
        assert np.isfinite(loss)
    finally:
        engine.close()


SPACES = [("hparams_search", p.stem) for p in sorted((CONF_DIR / "hparams_search").glob("*.yaml"))]
CODE_OPTIONS = [*OPTIONS, ("hydra", "default"), *SPACES]


@pytest.mark.parametrize(("group", "option"), CODE_OPTIONS,
                         ids=[f"{g}={o}" for g, o in CODE_OPTIONS])
def test_every_option_names_its_code(group: str, option: str) -> None:
    """One hop from an option to its code: a '# code:' line naming files that exist and, in
    them, the functions and classes it names (``step()``, ``CpuEngine``)."""
    lines = (CONF_DIR / group / f"{option}.yaml").read_text().splitlines()
    code = [line.removeprefix("# code:") for line in lines if line.startswith("# code:")]
    assert len(code) == 1, "one '# code:' line"
    root = CONF_DIR.parent
    named = re.findall(r"[\w/*]+\.py", code[0])  # a path, or a glob of several
    files = [f for name in named for f in sorted(root.glob(name))]
    assert named and all(any(root.glob(name)) for name in named), code[0]
    text = "".join(f.read_text() for f in files)
    for name in re.findall(r"(\w+)\(\)|\b([A-Z]\w+[a-z]\w*)\b", code[0]):
        name = name[0] or name[1]
        assert re.search(rf"^\s*(def|class) {name}\b", text, re.M), f"{name} in {code[0]}"


def test_defaults_come_from_core_config() -> None:
    """YAML options set values; everything they leave out is core.config's default."""
    _, exp = compose_experiment([])
    assert exp.scheduler == SchedulerConfig(name="constant")
    assert (exp.data.name, exp.optimizer.name, exp.engine.name) == ("digits", "adam", "auto")
    assert exp.layers.hidden == own_values("layers", "small")["hidden"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lr_strategy_selects_its_scheduler(strategy: str) -> None:
    _, exp = compose_experiment([f"optimizer={strategy}"])
    assert exp.scheduler.name == strategy
    assert exp.optimizer.lr == own_values("optimizer", strategy)["lr"]
    # the scheduler's other values come from scheduler/<strategy>.yaml
    for key, value in own_values("scheduler", strategy).items():
        assert getattr(exp.scheduler, key) == value, key


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("first", ["scheduler", "optimizer"])
def test_scheduler_on_command_line_wins(strategy: str, first: str) -> None:
    given = {"scheduler": "scheduler=step", "optimizer": f"optimizer={strategy}"}
    order = [given[first], *[v for k, v in given.items() if k != first]]
    _, exp = compose_experiment(order)
    assert exp.scheduler.name == "step"
    assert exp.scheduler.step_size == own_values("scheduler", "step")["step_size"]
    assert exp.optimizer.lr == own_values("optimizer", strategy)["lr"]


@pytest.mark.parametrize("layers", ["small", "deep"])
def test_hidden_stack_on_the_command_line(layers: str) -> None:
    _, exp = compose_experiment([f"layers={layers}", "layers.hidden=[128,64]"])
    assert exp.layers.hidden == [128, 64]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer=nope"], "optimizer: unknown option 'nope'; allowed: adam, adamw, cosine, "),
        (["optimizer.lr=-1"], "optimizer.lr: -1.0 is out of range"),
        (
            ["optimizer.foo=1"],
            "optimizer.foo: Key 'foo' not in 'OptimizerConfig'; allowed: name, lr",
        ),
        (["+optimizer.foo=1"], "optimizer.foo: unknown key; allowed: name, lr"),
        (["+foo=1"], "foo: unknown key; allowed: data, layers"),
        (["optimizer.lr=fast"], "optimizer.lr: Value 'fast' of type 'str' could not be converted"),
        (["layers.hidden=[64,0]"], "layers.hidden[1]: 0 is out of range"),
        (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience: -1 is out"),
        (["scheduler=cyclic", "scheduler.mode=zigzag"], "scheduler.mode: unknown value 'zigzag'"),
        (["data=file"], "data.path: required"),
        (["optimizer=="], ""),  # an override Hydra cannot parse
        (["optimizer.lr=interval(0"], "optimizer.lr=interval(0: cannot parse this override"),
        (["optimizer=[adam,nope]"], "optimizer: unknown option 'nope'; allowed: adam, adamw"),
        (["=3"], "Config group override must be a string"),  # was a ValueError traceback
        (["data="], "data: unknown option ''; allowed: blobs, circles"),
        (["trainer.seed=-1"], "trainer.seed: -1 is out of range; allowed: 0 <= trainer.seed <= "),
        (["trainer.seed=4294967296"], "trainer.seed: 4294967296 is out of range"),
        (["data.seed=-1"], "data.seed: -1 is out of range; allowed: 0 <= data.seed <= "),
        (["optimizer.lr=inf"], "optimizer.lr: inf is not a finite number; allowed: 0.0 < "),
    ],
)
def test_bad_overrides_fail_with_one_line(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_experiment(overrides)
    message = str(info.value)
    assert message.startswith(expected) and message
    assert "\n" not in message


def test_compose_repeats_and_leaves_a_running_hydra_alone() -> None:
    a = compose_experiment(["optimizer=sgd"])[1]
    b = compose_experiment(["optimizer=sgd"])[1]
    assert a == b
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        outer = compose(config_name="config", overrides=["data=moons"])
        assert compose_experiment(["data=xor"])[1].data.name == "xor"
        assert GlobalHydra.instance().is_initialized()  # the outer app's state is back
        assert compose(config_name="config").data.name == "digits"
    assert outer.data.name == "moons"


def test_to_experiment_types_a_plain_dictconfig_and_drops_hydra() -> None:
    cfg = OmegaConf.create({"optimizer": {"lr": 0.5}, "hydra": {"run": {"dir": "x"}}})
    exp = to_experiment(cfg)
    assert exp.optimizer.lr == 0.5 and exp.optimizer.name == "adam"
    with pytest.raises(ConfigError, match=r"^layers\.width: unknown key"):
        to_experiment(OmegaConf.create({"layers": {"width": 3}}))
    with pytest.raises(ConfigError, match=r"^optimizer\.lr: 0\.0 is out of range"):
        to_experiment(OmegaConf.create({"optimizer": {"lr": 0.0}}))


def numeric_fields(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[type, str, str]]:
    """(dataclass, field, dotted name) of every int or float field, from the type hints."""
    out = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out += numeric_fields(hint, f"{prefix}{f.name}.")
        elif hint in (int, float, int | None, float | None):
            out.append((cls, f.name, f"{prefix}{f.name}"))
    return out


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=str)
@pytest.mark.parametrize(
    ("cls", "field", "name"), [pytest.param(*f, id=f[2]) for f in numeric_fields()]
)
def test_every_numeric_field_refuses_non_finite_values(cls, field, name, value) -> None:
    """inf used to train and 'diverge' (optimizer.lr=inf): every number must be finite."""
    with pytest.raises(ConfigError) as info:
        cls(**{field: value})
    assert str(info.value).startswith(f"{name}: {value!r} is not a finite number; allowed: ")


def test_unique_dir_claims_a_new_folder_each_time(tmp_path) -> None:
    from app.compose import unique_dir

    base = tmp_path / "runs" / "12-00-00"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "12-00-00.1").write_text("a file where .1 would go")
    got = [unique_dir(str(base)) for _ in range(3)]
    assert got == [str(base), str(base) + ".2", str(base) + ".3"]
    assert all(Path(g).is_dir() and not any(Path(g).iterdir()) for g in got)
    with pytest.raises(ConfigError, match="needs a folder path"):
        unique_dir("")
