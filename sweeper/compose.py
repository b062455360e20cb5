"""Composing a trial's config in a few milliseconds instead of ~90.

A full Hydra compose builds the defaults tree and merges every YAML file, every time. Trials
differ mostly in values (``optimizer.lr=0.012``), and only a handful of group choices
(``optimizer=adam``) recur. ``ComposeCache`` composes once per combination of group choices
(and other structural overrides) and keeps that config. A trial's values are set on it
exactly as Hydra applies command-line overrides after composition (``OmegaConf.update(...,
merge=True)`` on the struct-mode config, so types are checked against the schema on
assignment), the result is validated with the same ``to_experiment``, and the nodes the
values replaced are put back (cheaper than a deep copy of the config per trial).

A full compose costs ~80 ms, and a space of 5 optimizers and 4 schedulers has 20
combinations per worker. So a combination of group choices is itself assembled from parts
where that is exact: each *local* choice (``optimizer=adam``, whose composition differs from
the same overrides without it only under its own ``optimizer`` node) is composed once on
top of the other structural overrides, and its node is put into a copy of that skeleton: 12
composes instead of 20 (tests/test_compose.py counts them). A choice that reaches beyond
its node (``optimizer=cosine`` also picks a scheduler; ``hparams_search=default`` is a
``_global_`` file) joins the skeleton instead, learned the first time it is seen.

A trial's values need not even touch OmegaConf (~4 ms for ten values): when the cached
config holds no interpolation (so no other field can follow a sampled one), the values are
converted as OmegaConf converts them for the field's node type (an int to a float field
becomes ``float(v)``; a list of ints replaces a ``list[int]``), and the dataclasses are
rebuilt from the config's own ExperimentConfig with them, so every ``__post_init__`` check
runs as in ``to_experiment``. Any other value (a string for a number, ``null``, an
interpolation, a dict), key or failure takes the OmegaConf path above. A trial's new numbers
are not given to Hydra's parser either (~0.1 ms a text): ``key=<int, float or [ints]>`` is
read by a regular expression of the same grammar. All of it: ~0.1 ms per trial.

Anything unusual (``+key=``, ``~key``, ``key@pkg=``, a key that is not in the config) and
any error goes through the full ``compose_experiment``, so errors read exactly as they do
without the cache. tests/test_compose.py checks the fast path against a full compose field
by field (and type by type) on random points of every search space, on combinations of
local and non-local choices and on values of every kind, and the number texts against
Hydra's parser.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from app.compose import compose_config, compose_experiment, to_experiment
from core.config import ConfigError, ExperimentConfig


class ComposeCache:
    def __init__(self) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self._parser = OverridesParser.create()
        self._base: dict[tuple[str, ...], Any] = {}  # structural overrides -> composed DictConfig
        self._parsed: dict[str, Any] = {}  # override text -> hydra Override (choices recur)
        self._groups: dict[str, str] = {}  # group choice text -> its group ("optimizer")
        self._nonlocal: set[str] = set()  # group choices that change more than their node
        self._direct: dict[tuple[str, ...], _Direct | None] = {}  # structural -> its values' path

    def _split(self, overrides: list[str]) -> tuple[list[str], list[Any]] | None:
        """(structural overrides, parsed value overrides); None when one cannot be parsed."""
        structural, values = [], []
        for text in overrides:
            override = self._parsed.get(text) or _number_override(text)
            if override is None:
                try:
                    override = self._parser.parse_overrides([text])[0]
                except Exception:
                    return None
                if len(self._parsed) < 10_000:
                    self._parsed[text] = override
            key = override.key_or_group
            # key=value: no +, ++ or ~, no @package, no sweep, not a nested group (hydra/x=y)
            simple = (not (override.is_add() or override.is_force_add() or override.is_delete())
                      and override.package is None and "/" not in key
                      and not override.is_sweep_override())
            # a dotted key is a value (a group choice has no dot: optimizer=adam)
            if simple and "." in key and not key.startswith("hydra."):
                values.append(override)
            else:
                structural.append(text)
                if simple and "." not in key and isinstance(override.value(), str):
                    self._groups[text] = key  # a group choice, maybe a local one
        return structural, values

    def experiment(self, overrides: list[str]) -> ExperimentConfig:
        """The ExperimentConfig equal to ``compose_experiment(overrides)[1]``: the values are
        set on the cached config, read into dataclasses, and the nodes they replaced put back
        (a deep copy of the config per trial would cost ~1 ms of its ~4)."""
        from omegaconf import DictConfig, OmegaConf

        prepared = self._prepare(overrides)
        if prepared is None:
            return compose_experiment(overrides)[1]
        key, base, values = prepared
        if key not in self._direct:
            self._direct[key] = _Direct.of(base)
        direct = self._direct[key]
        exp = direct.experiment(values) if direct is not None else None
        if exp is not None:
            return exp
        saved = []  # (parent node, key, a copy of the node the value replaces)
        try:
            for override in values:
                parent_key, _, leaf = override.key_or_group.rpartition(".")
                parent = OmegaConf.select(base, parent_key) if parent_key else base
                if not isinstance(parent, DictConfig) or leaf not in parent:
                    raise KeyError(override.key_or_group)
                saved.append((parent, leaf, copy.deepcopy(parent._get_node(leaf))))
                OmegaConf.update(base, override.key_or_group, override.value(), merge=True)
            return to_experiment(base)
        except Exception:
            return compose_experiment(overrides)[1]  # exactly the error a full compose gives
        finally:
            for parent, leaf, node in reversed(saved):
                parent[leaf] = node

    def _prepare(self, overrides: list[str]):
        """(structural overrides, their cached composed config, parsed value overrides), or
        None where only the full compose can answer (an unparsable override, an error)."""
        split = self._split(list(overrides))
        if split is None:
            return None
        structural, values = split
        try:
            return tuple(structural), self._structural(structural), values
        except ConfigError:
            return None

    def _structural(self, structural: list[str]):
        """The composed config of these structural overrides (cached): assembled from a
        skeleton and the nodes of its local group choices where possible, else composed."""
        key = tuple(structural)
        base = self._base.get(key)
        if base is None:
            base = self._assembled(structural)
            if base is None:
                base = compose_config(structural)
            self._base[key] = base
        return base

    def _assembled(self, structural: list[str]):
        """None when fewer than two choices can be split off (one is composed as it is), a
        group is repeated, or a choice turns out to reach beyond its node (remembered: it
        joins the skeleton next time)."""
        parts = [t for t in structural if t in self._groups and t not in self._nonlocal]
        groups = [self._groups[t] for t in parts]
        if len(parts) < 2 or len(set(groups)) < len(groups):
            return None
        skeleton = [t for t in structural if t not in parts]
        base = self._structural(skeleton)
        cfg = None
        for text, group in zip(parts, groups):
            with_choice = self._structural(skeleton + [text])
            if not _differs_only_under(with_choice, base, group):
                self._nonlocal.add(text)
                return None
            if cfg is None:
                cfg = copy.deepcopy(base)
            cfg[group] = copy.deepcopy(with_choice[group])
        return cfg


def _differs_only_under(a, b, key: str) -> bool:
    """Whether two composed configs hold the same keys in the same order, and equal nodes
    everywhere but under ``key`` (compared unresolved: interpolations as written)."""
    from omegaconf import OmegaConf

    ca, cb = (OmegaConf.to_container(c, resolve=False) for c in (a, b))
    return list(ca) == list(cb) and all(ca[k] == cb[k] for k in ca if k != key)



# A trial's new numbers (sweeper.space writes floats with repr, widths as [int,...]) come
# as fresh texts every trial, which Hydra's ANTLR parser reads in ~0.1 ms each. These three
# forms are read here instead, exactly as its grammar reads them (OverrideLexer.g4: INT,
# FLOAT, a list of INT; no spaces, underscores, inf or nan): a plain dotted key, "=", and an
# int, a finite float literal or a list of ints. Anything else goes to Hydra's parser;
# tests/test_compose.py compares the Overrides with the parser's.
_INT = r"-?(?:0|[1-9][0-9]*)"
_FLOAT = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)"
_NUMBER = re.compile(
    rf"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)="
    rf"(?:({_INT})|({_FLOAT})|\[({_INT}(?:,{_INT})*)\])")


def _number_override(text: str):
    """Hydra's Override for ``key=<int | float | [int,...]>``; None for any other text."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    from hydra.core.override_parser.types import Override, OverrideType, ValueType

    key, whole, real, items = match.groups()
    if whole is not None:
        value: Any = int(whole)
    elif real is not None:
        value = float(real)
    else:
        value = [int(item) for item in items.split(",")]
    return Override(type=OverrideType.CHANGE, key_or_group=key, value_type=ValueType.ELEMENT,
                    _value=value, input_line=text)


_REFUSED = object()  # a value the direct path leaves to OmegaConf


class _Direct:
    """A trial's values applied to the dataclasses of one cached config, without OmegaConf:
    only where that is provably what ``OmegaConf.update`` and ``to_experiment`` give."""

    def __init__(self, exp: ExperimentConfig, kinds: dict[str, tuple[str, bool]]) -> None:
        self.exp = exp  # to_experiment(the cached config), never handed out
        self.kinds = kinds  # dotted key -> (node kind, optional) of every settable leaf
        self.plan = _plan(exp, "")

    @classmethod
    def of(cls, cfg) -> _Direct | None:
        """None when the config holds an interpolation (a field could follow a sampled one)
        or is not a valid experiment by itself (its trials' values may make it one)."""
        from omegaconf import OmegaConf

        plain = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items()
                 if k != "hydra"}  # to_experiment drops hydra
        if _any_interpolation(plain):
            return None
        try:
            exp = to_experiment(cfg)
        except ConfigError:
            return None
        if not _all_init(exp):
            return None
        kinds: dict[str, tuple[str, bool]] = {}
        _leaf_kinds(cfg, "", kinds)
        return cls(exp, kinds)

    def experiment(self, values: list[Any]) -> ExperimentConfig | None:
        """The ExperimentConfig with these parsed value overrides (applied in order, the last
        of a key wins, as OmegaConf.update does), or None: let OmegaConf answer."""
        changes = {}
        for override in values:
            key = override.key_or_group
            kind = self.kinds.get(key)
            value = _REFUSED if kind is None else _converted(override.value(), *kind)
            if value is _REFUSED:
                return None
            changes[key] = value
        try:
            return _rebuilt(self.exp, self.plan, changes)
        except Exception:  # noqa: BLE001 - a __post_init__ check: OmegaConf's path words it
            return None


def _converted(value: Any, kind: str, optional: bool) -> Any:
    """``value`` as OmegaConf stores it in a node of this kind (its _validate_and_convert),
    for the plain cases only; _REFUSED for anything else (OmegaConf decides)."""
    if value is None:
        return None if optional and kind != "list_int" else _REFUSED
    vtype = type(value)
    if kind == "float" and vtype in (float, int):
        try:
            return float(value)
        except OverflowError:
            return _REFUSED
    if (kind == "int" and vtype is int) or (kind == "bool" and vtype is bool):
        return value
    if kind == "str" and vtype is str and "$" not in value and value != "???":
        return value
    if kind == "list_int" and vtype is list and all(type(v) is int for v in value):
        return list(value)  # merging a list into a list[int] replaces it, item by item
    return _REFUSED


def _leaf_kinds(node, prefix: str, kinds: dict[str, tuple[str, bool]]) -> None:
    """Fill ``kinds`` with the leaves a value can be converted for: float, int, bool and str
    nodes (also those holding None, e.g. engine.threads), and list[int] nodes holding a
    list; not read-only."""
    from omegaconf import BooleanNode, DictConfig, FloatNode, IntegerNode, ListConfig, StringNode

    names = {FloatNode: "float", IntegerNode: "int", BooleanNode: "bool", StringNode: "str"}
    for key in node:
        if not prefix and key == "hydra":
            continue
        child = node._get_node(key)
        name = f"{prefix}{key}"
        if child._get_flag("readonly"):
            continue
        if isinstance(child, (DictConfig, ListConfig)) and (child._is_none()
                                                            or child._is_missing()):
            continue  # a value merged into it would build a new container
        if isinstance(child, DictConfig):
            _leaf_kinds(child, f"{name}.", kinds)
        elif isinstance(child, ListConfig):
            if child._metadata.element_type is int:
                kinds[name] = ("list_int", child._is_optional())
        elif type(child) in names:  # its type holds whatever its value (None included)
            kinds[name] = (names[type(child)], child._is_optional())


def _any_interpolation(value: Any) -> bool:
    """Whether a container (unresolved) holds a string that may be an interpolation."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_any_interpolation(v) for v in value.values())
    if isinstance(value, list):
        return any(_any_interpolation(v) for v in value)
    return False


def _all_init(obj: Any) -> bool:
    """Whether every field of a dataclass tree is an __init__ argument (to_object builds
    them so; a field set after __init__ is not something _rebuilt reproduces)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not f.init or (dataclasses.is_dataclass(value) and not _all_init(value)):
            return False
    return True


def _plan(obj: Any, prefix: str) -> tuple:
    """(class, [(field, dotted name, the plan of a nested dataclass or None, whether the
    value is a container)]): _rebuilt's walk of ``obj``, worked out once."""
    entries = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        sub = _plan(value, f"{name}.") if dataclasses.is_dataclass(value) else None
        entries.append((f.name, name, sub, isinstance(value, (list, dict))))
    return type(obj), entries


def _rebuilt(obj: Any, plan: tuple, changes: dict[str, Any]) -> Any:
    """A new dataclass tree equal to ``obj`` but for ``changes`` (dotted name -> value), built
    through every class's __init__ (and so __post_init__), as OmegaConf.to_object builds it:
    inner objects first, each container a fresh copy."""
    cls, entries = plan
    kwargs = {}
    for field_name, name, sub, container in entries:
        if name in changes:
            value = changes[name]
        else:
            value = getattr(obj, field_name)
            if sub is not None:
                value = _rebuilt(value, sub, changes)
            elif container:
                value = copy.deepcopy(value)
        kwargs[field_name] = value
    return cls(**kwargs)
