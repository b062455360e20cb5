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

Anything unusual (``+key=``, ``~key``, ``key@pkg=``, a key that is not in the config) and
any error goes through the full ``compose_experiment``, so errors read exactly as they do
without the cache. tests/test_compose.py checks the fast path against a full compose field
by field on random points of every search space and on combinations of local and non-local
choices.
"""

from __future__ import annotations

import copy
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

    def _split(self, overrides: list[str]) -> tuple[list[str], list[Any]] | None:
        """(structural overrides, parsed value overrides); None when one cannot be parsed."""
        structural, values = [], []
        for text in overrides:
            override = self._parsed.get(text)
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
        base, values = prepared
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
        """(cached composed config of the structural overrides, parsed value overrides), or
        None where only the full compose can answer (an unparsable override, an error)."""
        split = self._split(list(overrides))
        if split is None:
            return None
        structural, values = split
        try:
            return self._structural(structural), values
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

