"""Search spaces written in Hydra's sweep grammar, turned into Optuna distributions.

A space is an option of the ``hparams_search`` config group (``conf/hparams_search/<name>.yaml``,
its ``hydra.sweeper`` section; see load_space), or a plain YAML file with three parts:

    params:            # key -> Hydra sweep expression (or a plain value: fixed)
      optimizer: choice(sgd, adam)                  # a config group option
      optimizer.lr: tag(log, interval(1e-4, 1e-1))  # log-uniform float
      trainer.batch_size: choice(16, 32, 64)
      layers.activation: choice(relu, tanh)
    layers:            # optional conditional architecture (define-by-run)
      depth: range(1, 4)                            # 1, 2 or 3 hidden layers
      units: tag(log, int(interval(16, 256)))       # one width per layer
    overrides:         # fixed overrides for every trial
      - trainer.epochs=30

``choice`` -> categorical, ``range`` -> int/float with a step (stop exclusive, as in Hydra),
``interval`` -> uniform float (``int(interval)`` -> int), ``tag(log, ...)`` -> log scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import METRICS, ConfigError, check_choice

SPACE_KEYS = ("params", "layers", "overrides", "metric", "direction", "cv", "constraints")


@dataclass
class SearchSpace:
    params: dict[str, Any]  # name -> optuna distribution, or a fixed value
    depth: Any = None  # distribution of the number of hidden layers (conditional space)
    units: Any = None  # distribution of each layer's width
    overrides: list[str] = field(default_factory=list)
    metric: str | None = None
    direction: str | None = None
    cv: int | str | None = None  # folds per trial (search.py --cv), auto, or None: search.py's default
    constraints: list[str] | None = None  # bounds such as n_params<=20000 (sweeper.objectives)
    source: str = "<inline>"

    def sample(self, trial) -> list[str]:
        """Draw a trial's parameters (define-by-run) and return them as Hydra overrides."""
        groups, values = [], []
        for name, dist in self.params.items():
            value = _suggest(trial, name, dist)
            (values if "." in name else groups).append(f"{name}={_format(value)}")
        if self.depth is not None:
            depth = _suggest(trial, "layers.depth", self.depth)
            widths = [_suggest(trial, f"layers.units_{i}", self.units) for i in range(int(depth))]
            values.append(f"layers.hidden=[{','.join(str(int(w)) for w in widths)}]")
        # group choices first: a value override must land on the chosen option
        return list(self.overrides) + groups + values

    def overrides_for(self, params: dict[str, Any]) -> list[str]:
        """Overrides for already-known parameter values (a re-queued or best trial)."""
        from optuna.trial import FixedTrial

        return self.sample(FixedTrial(params))

    def definition(self) -> dict[str, Any]:
        """What the space samples, as plain JSON (not where it came from): a resumed study
        compares it with the one it was created with."""
        from optuna.distributions import distribution_to_json

        def text(d: Any) -> Any:
            return distribution_to_json(d) if _is_dist(d) else d

        return {
            "params": {name: text(d) for name, d in self.params.items()},
            "layers": None if self.depth is None else {"depth": text(self.depth), "units": text(self.units)},
            "overrides": list(self.overrides),
        }

    def grid(self) -> dict[str, list]:
        """All values of every parameter, for Optuna's GridSampler (finite spaces only)."""
        import numpy as np
        import optuna.distributions as D

        if self.depth is not None:
            raise ConfigError(
                f"search.layers: a conditional depth/units space cannot be gridded ({self.source}); "
                "use --sampler tpe|random|qmc"
            )
        grid = {}
        for name, d in self.params.items():
            if isinstance(d, D.CategoricalDistribution):
                grid[name] = list(d.choices)
            elif _is_dist(d) and getattr(d, "step", None):
                grid[name] = list(np.arange(d.low, d.high + d.step / 2, d.step).tolist())
            elif _is_dist(d):
                raise ConfigError(
                    f"search.params.{name}: an interval has infinitely many values; "
                    "--sampler grid needs choice(...) or range(...)"
                )
        return grid


def _is_dist(d: Any) -> bool:
    from optuna.distributions import BaseDistribution

    return isinstance(d, BaseDistribution)


def _suggest(trial, name: str, dist: Any) -> Any:
    import optuna.distributions as D

    if not _is_dist(dist):
        return dist
    if isinstance(dist, D.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_distribution(key: str, expr: Any, where: str) -> Any:
    """One ``key: expression`` pair -> an Optuna distribution (or the plain fixed value)."""
    import optuna.distributions as D
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_overrides([f"{key}={expr}"])[0]
    except HydraException as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{where}.{key}: cannot parse {expr!r} ({first})") from None
    value = override.value()
    log = "log" in getattr(value, "tags", set())
    bounds = [getattr(value, k, None) for k in ("start", "stop", "end", "step")]
    if any(isinstance(b, float) and not math.isfinite(b) for b in bounds):
        raise ConfigError(f"{where}.{key}: {expr!r} has a bound that is not finite")
    if isinstance(value, RangeSweep) and value.step == 0:
        raise ConfigError(f"{where}.{key}: {expr!r} has step 0; allowed: a step that is not 0")
    try:
        if isinstance(value, ChoiceSweep):
            return D.CategoricalDistribution(list(value.list))
        if isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step
            n = math.ceil((stop - start) / step - 1e-9)
            if n < 1:
                raise ValueError(f"range({start}, {stop}, {step}) is empty")
            last = start + (n - 1) * step
            if all(float(x).is_integer() for x in (start, stop, step)):
                return D.IntDistribution(int(start), int(last), step=int(step), log=log and step == 1)
            return D.FloatDistribution(float(start), float(last), step=float(step))
        if isinstance(value, IntervalSweep):
            if isinstance(value.start, int) and isinstance(value.end, int):
                return D.IntDistribution(value.start, value.end, log=log)
            return D.FloatDistribution(float(value.start), float(value.end), log=log)
    except ValueError as e:
        raise ConfigError(f"{where}.{key}: {e}") from None
    if override.is_sweep_override():
        raise ConfigError(f"{where}.{key}: {expr!r} is not supported; allowed: choice, range, interval, tag(log, ...)")
    return value


def parse_space(data: Any, source: str = "<inline>") -> SearchSpace:
    """A space file's content -> SearchSpace; ConfigError naming the key for anything else,
    including a space with nothing to search (every trial would train the same model)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"search: {source} holds {_kind(data)}; allowed: a mapping with keys "
            f"{', '.join(SPACE_KEYS)}"
        )
    unknown = sorted(set(map(str, data)) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"search: unknown key {unknown[0]!r} in {source}; allowed: {', '.join(SPACE_KEYS)}")
    raw = _section(data, "params", dict, "a mapping of key: expression", source) or {}
    params = {str(k): to_distribution(str(k), v, "search.params") for k, v in raw.items()}
    space = SearchSpace(params=params, source=source)
    layers = _section(data, "layers", dict, "a mapping with depth and units", source)
    if layers:
        extra = sorted(set(layers) - {"depth", "units"})
        if extra or "depth" not in layers or "units" not in layers:
            raise ConfigError(f"search.layers: needs exactly 'depth' and 'units' in {source}")
        space.depth = to_distribution("depth", layers["depth"], "search.layers")
        space.units = to_distribution("units", layers["units"], "search.layers")
        if "layers.hidden" in params:
            raise ConfigError("search.params.layers.hidden: conflicts with search.layers (depth/units)")
    overrides = _section(data, "overrides", list, "a list of Hydra overrides", source) or []
    space.overrides = [str(o) for o in overrides]
    metric = data.get("metric")
    space.metric = ",".join(map(str, metric)) if isinstance(metric, list) else metric
    space.direction = data.get("direction")
    if space.metric is not None and not any(c in str(space.metric) for c in ",:"):
        check_choice("search.metric", space.metric, METRICS)  # one metric, as always
    elif space.metric is not None:
        from .objectives import parse_goals

        parse_goals(str(space.metric), "search.metric")
    constraints = _section(data, "constraints", list, "a list such as [n_params<=20000]", source)
    if constraints is not None:
        from .objectives import parse_constraints

        parse_constraints(constraints, "search.constraints")
        space.constraints = [str(c) for c in constraints]
    if space.direction is not None:
        check_choice("search.direction", space.direction, ("minimize", "maximize"))
    searched = [d for d in [*params.values(), space.depth, space.units] if _is_dist(d)]
    if all(_n_values(d) == 1 for d in searched):
        raise ConfigError(
            f"search.params: {source} has nothing to search (no choice, range or interval with "
            "two or more values, and no layers:); every trial would train the same model"
        )
    cv = data.get("cv")
    if cv is not None and cv != "auto" and (isinstance(cv, bool) or not isinstance(cv, int) or not 1 <= cv <= 20):
        raise ConfigError(f"search.cv: {cv!r} in {source} is not allowed; allowed: auto or a whole number 1..20")
    space.cv = cv
    return space


def _section(data: dict, key: str, kind: type, allowed: str, source: str) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"search.{key}: {source} has {_kind(value)}; allowed: {allowed}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (an empty file)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"the value {value!r}"


def _n_values(d: Any) -> float:
    """How many values a distribution can take (math.inf for a continuous interval)."""
    import optuna.distributions as D

    if isinstance(d, D.CategoricalDistribution):
        return len(d.choices)
    if d.low == d.high:
        return 1
    return math.inf


SPACES_GROUP = "hparams_search"  # conf/hparams_search/<name>.yaml: spaces as a Hydra config group


def load_space(name_or_path: str, conf_dir: Path) -> SearchSpace:
    """A space by name (``conf/hparams_search/<name>.yaml``, the group ``python run.py -m
    hparams_search=<name>`` uses) or by path to a YAML file in the plain format
    (params:, layers:, overrides:, metric:, direction:, cv:)."""
    path = Path(name_or_path)
    named = path.suffix not in (".yaml", ".yml")
    if named:
        path = conf_dir / SPACES_GROUP / f"{name_or_path}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in (conf_dir / SPACES_GROUP).glob("*.yaml"))
        raise ConfigError(f"search.space: no space {name_or_path!r}; available: {', '.join(available)}")
    data = _read_yaml(path, resolve=not named)  # a group option may name Hydra's own ${...}
    if named:
        return group_space(data, name_or_path, str(path))
    return parse_space(data, source=str(path))


def group_space(data: Any, name: str, source: str) -> SearchSpace:
    """The space of an hparams_search option: ``hydra.sweeper`` holds params, layers,
    metric, direction and cv; everything else in the file (its defaults and values) is
    applied to every trial by composing with ``hparams_search=<name>``."""
    sweeper = (data.get("hydra") or {}).get("sweeper") if isinstance(data, dict) else None
    if not isinstance(sweeper, dict):
        raise ConfigError(f"search: {source} has no hydra.sweeper section; allowed: an "
                          f"{SPACES_GROUP} option with hydra.sweeper.params")
    keys = ("params", "layers", "metric", "direction", "cv", "constraints")
    space = parse_space({k: sweeper[k] for k in keys if k in sweeper}, source=source)
    space.overrides = [f"{SPACES_GROUP}={name}"]
    return space


def _read_yaml(path: Path, *, resolve: bool) -> Any:
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=resolve)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(
            f"search.space: cannot read {path} as YAML ({type(e).__name__}: {first})"
        ) from None
