"""Composing conf/ with Hydra: the typed schema, composition, one-line errors, run folders.

The schema is ``core.config``'s dataclasses (the single source of truth): ``register()`` stores ``core.config.ExperimentConfig`` in Hydra's ConfigStore as
``experiment_schema``; ``conf/config.yaml`` lists it first in its defaults, so every group
option and command-line override is merged into the typed dataclass fields. A wrong type
(``optimizer.lr=abc``) or an unknown key (``optimizer.foo=1``) therefore fails at compose
time with the key named; out-of-range values fail in the dataclasses' ``__post_init__`` when
``to_experiment`` converts the composed config with ``OmegaConf.to_object``.

The YAML files under conf/ only set values; defaults and ranges live in core.config.
``unique_dir`` is the resolver conf/hydra/default.yaml names a run's folder with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import os
import pickle
import re
import sys
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

import conf
from core.config import ConfigError, ExperimentConfig

__all__ = [
    "COMPOSE_ERRORS",
    "CONF_DIR",
    "SCHEMA_NAME",
    "compose_config",
    "compose_experiment",
    "config_error",
    "register",
    "release_claimed",
    "to_experiment",
    "unique_dir",
]

CONF_DIR = Path(conf.__file__).resolve().parent  # the YAML groups
SCHEMA_NAME = "experiment_schema"  # the name conf/config.yaml lists first in its defaults


UNIQUE_DIR = "nnsweep.unique_dir"  # resolver conf/hydra/default.yaml wraps its folders in


def register() -> None:
    """Store the ExperimentConfig schema in Hydra's ConfigStore and register the output-folder
    resolver (both idempotent)."""
    cs = ConfigStore.instance()
    if f"{SCHEMA_NAME}.yaml" not in cs.repo:
        cs.store(name=SCHEMA_NAME, node=ExperimentConfig)
    if not OmegaConf.has_resolver(UNIQUE_DIR):
        # cached: every later lookup in the same config (and in multirun jobs, which get a copy
        # of the master config's cache from Hydra) returns the folder claimed the first time
        OmegaConf.register_new_resolver(UNIQUE_DIR, unique_dir, use_cache=True)


def unique_dir(base: str) -> str:
    """Claim a new folder for one run or multirun: ``base`` itself, or ``base.1``, ``base.2``...
    when another process took it first; return its path.

    ``mkdir`` without exist_ok is atomic (also on NFS), so two runs started in the same second
    never share a folder; the suffix keeps the folders in time order when listed.
    """
    if not str(base).strip():
        raise ConfigError(f"{UNIQUE_DIR}: needs a folder path, got {base!r}")
    path = Path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    for k in itertools.count():
        candidate = path if k == 0 else path.with_name(f"{path.name}.{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        CLAIMED.append(candidate)
        return str(candidate)
    raise AssertionError("unreachable")


CLAIMED: list[Path] = []  # folders unique_dir created in this process
BOOKKEEPING = ("multirun.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def release_claimed() -> None:
    """Remove the folders this process claimed when they hold nothing but Hydra's bookkeeping
    (and empty logs): what bad input leaves behind before anything was trained. A folder with
    any other file is left as it is; parent folders are never removed (another run may be
    creating its folder in them)."""
    while CLAIMED:
        folder = CLAIMED.pop()
        files = [f for f in folder.rglob("*") if f.is_file()]
        keep = [
            f
            for f in files
            if f.relative_to(folder).as_posix() not in BOOKKEEPING
            and not (f.suffix == ".log" and f.stat().st_size == 0)
        ]
        if keep or not folder.is_dir():
            continue
        for f in files:
            f.unlink()
        for d in sorted((d for d in folder.rglob("*") if d.is_dir()), reverse=True):
            d.rmdir()
        folder.rmdir()


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """Composed config -> validated ExperimentConfig; ConfigError (one line) on a bad value."""
    if "hydra" in cfg:  # a Hydra app's own config (the copy costs ~6 ms: only when needed)
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("hydra")
    _check_keys(cfg, ExperimentConfig, "")  # also keys added with +key=..., which Hydra allows
    try:
        # merging into the schema types a plain DictConfig (e.g. loaded from a YAML file); a
        # composed config is typed by the schema already (the merge would cost ~13 ms)
        typed = cfg if OmegaConf.get_type(cfg) is ExperimentConfig else OmegaConf.merge(
            OmegaConf.structured(ExperimentConfig), cfg)
        exp = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e)) from None
    assert isinstance(exp, ExperimentConfig)
    return exp


def compose_experiment(
    overrides: list[str], *, config_name: str = "config"
) -> tuple[DictConfig, ExperimentConfig]:
    """Compose conf/ with Hydra overrides; return the DictConfig and the validated dataclasses.

    Safe to call many times in one process, also inside a running Hydra app: the global Hydra
    state is set aside and restored. Bad overrides raise ConfigError with one line.
    """
    cfg = compose_config(overrides, config_name=config_name)
    return cfg, to_experiment(cfg)


def compose_config(overrides: list[str], *, config_name: str = "config") -> DictConfig:
    """Compose conf/ with Hydra overrides, not yet validated (see compose_experiment).

    A Hydra compose costs ~100 ms, and one search command used to run ~40 of them (settings,
    each worker process's trials, the finalists, the report), most of them repeats. A
    successful composition is kept: in the process, and on disk under ``cache_dir()`` keyed
    by the overrides and a fingerprint of everything it depends on (every file under conf/
    and hydra_plugins/, the schema and this module, the Hydra, OmegaConf and Python
    versions), so another process or the next run reads it back (~0.5 ms). Each caller gets
    its own copy. Errors are never kept: they are raised by a fresh compose every time."""
    register()  # the schema and resolvers, as after a compose (idempotent, ~1 us)
    stamp = _stamp()  # an edit under conf/ since the last call empties the memo (~0.3 ms)
    if stamp != _STAMP[0]:
        _MEMO.clear()
        _fingerprint.cache_clear()
        _STAMP[0] = stamp
    key = (config_name, *overrides)
    data = _MEMO.get(key)
    if data is not None:
        return pickle.loads(data)
    data, cfg = _disk_get(key)
    if cfg is None:
        cfg = _compose(overrides, config_name)
        data = pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
        _disk_put(key, data)
    if len(_MEMO) < 512:
        _MEMO[key] = data
    return cfg


def _compose(overrides: list[str], config_name: str) -> DictConfig:
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except COMPOSE_ERRORS as e:
        raise config_error(e) from None
    finally:
        restore_gh_from_backup(backup)
    return cfg


_MEMO: dict[tuple[str, ...], bytes] = {}  # (config name, *overrides) -> the pickled config
_STAMP: list = [None]  # _stamp() when _MEMO was last valid


def _sources() -> list[str]:
    """The files a composition depends on besides Hydra itself: the schema (core/config.py),
    this module, and the YAML and Python files under conf/ and hydra_plugins/ (sorted)."""
    import core.config

    files = [core.config.__file__, __file__]
    for root in (CONF_DIR, CONF_DIR.parent / "hydra_plugins"):
        for folder, _, names in os.walk(root):
            files += [os.path.join(folder, n) for n in names if n.endswith((".yaml", ".yml", ".py"))]
    return sorted(files)


def _stamp() -> tuple:
    """(path, modification time, size) of every source file: cheap to take on every call
    (~0.3 ms), unlike reading them."""
    out = []
    for path in _sources():
        with contextlib.suppress(OSError):  # removed meanwhile
            st = os.stat(path)
            out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


CACHE_ENV = "NNSWEEP_CACHE_DIR"  # set to an empty string: no disk cache


def cache_dir() -> Path | None:
    """$NNSWEEP_CACHE_DIR, else $XDG_CACHE_HOME/nnsweep, else ~/.cache/nnsweep; None when
    NNSWEEP_CACHE_DIR is set empty."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]) if os.environ[CACHE_ENV] else None
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except (RuntimeError, KeyError):  # no home directory: no disk cache
            return None
    return Path(base) / "nnsweep"


@functools.cache
def _fingerprint() -> str:
    """What a composition depends on besides its overrides: the files under conf/ and
    hydra_plugins/ (path and bytes), the schema (core/config.py), this module, and the
    versions of Hydra, OmegaConf and Python."""
    import hydra
    import omegaconf

    digest = hashlib.sha256(f"{hydra.__version__} {omegaconf.__version__} {sys.version}".encode())
    for path in _sources():
        digest.update(path.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def _disk_path(key: tuple[str, ...]) -> Path | None:
    """The key's file; None without a cache, or when an override adds a config search path
    (files outside conf/ that the fingerprint does not cover)."""
    root = cache_dir()
    if root is None or any("searchpath" in text for text in key):
        return None
    name = hashlib.sha256("\0".join((_fingerprint(), *key)).encode()).hexdigest()[:40]
    return root / "compose" / f"{name}.pkl"


CACHE_FILES = 1000  # beyond this many kept compositions the least recently used half goes


def _disk_get(key: tuple[str, ...]) -> tuple[bytes | None, DictConfig | None]:
    """(the cached pickle, the config read from it), or (None, None): no cache, not there,
    unreadable, or not a config. A hit is marked recently used (its modification time)."""
    try:
        path = _disk_path(key)
        if path is None:
            return None, None
        data = path.read_bytes()
        cfg = pickle.loads(data)
        if not isinstance(cfg, DictConfig):
            return None, None
        os.utime(path)
        return data, cfg
    except Exception:  # noqa: BLE001 (missing, torn or foreign: whatever reading raises)
        return None, None  # composed afresh, and the file overwritten


def _disk_put(key: tuple[str, ...], data: bytes) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written is skipped."""
    try:
        path = _disk_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        _prune(path.parent)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    """Keep the folder bounded: past CACHE_FILES files, delete the least recently used half
    (full override lists of single runs and picks would otherwise add files forever)."""
    entries = list(os.scandir(folder))
    if len(entries) <= CACHE_FILES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime)
    for entry in entries[: len(entries) - CACHE_FILES // 2]:
        with contextlib.suppress(OSError):  # another process removed it first
            os.unlink(entry.path)


# What composing bad overrides raises: Hydra's and OmegaConf's errors, and a plain ValueError
# from Hydra's defaults list for a malformed group override such as ``=3``.
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, ValueError)


def config_error(e: Exception) -> ConfigError:
    """A composition error (one of COMPOSE_ERRORS, often many lines) -> ConfigError, one line.

    compose_experiment and run.py (whose errors come from inside Hydra's own app) share it, so
    ``search.py`` and ``run.py`` word a bad override the same way.
    """
    if isinstance(e, ConfigError):
        return e
    if isinstance(e, MissingConfigException):
        return ConfigError(_missing_message(e))
    if isinstance(e, OverrideParseException):
        return ConfigError(f"{e.override}: cannot parse this override ({_one_line(e.message)})")
    if isinstance(e, OmegaConfBaseException):
        return ConfigError(_omegaconf_message(e))
    if isinstance(e.__cause__, OmegaConfBaseException):
        return ConfigError(_omegaconf_message(e.__cause__))
    return ConfigError(_one_line(str(e)) or type(e).__name__)


def _check_keys(node: DictConfig, cls: type, prefix: str) -> None:
    """Raise ConfigError for a key that is no field of the dataclass ``cls`` (recursively)."""
    hints = _type_hints(cls)
    for key, value in node.items_ex(resolve=False):  # no interpolation resolved, no ??? raised
        name = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{name}: unknown key; allowed: {', '.join(hints)}")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, DictConfig):
            _check_keys(value, hints[key], f"{name}.")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _missing_message(e: MissingConfigException) -> str:
    """'optimizer: unknown option 'nope'; allowed: adam, ...' for a missing group option."""
    missing = e.missing_cfg_file or ""
    if "/" in missing:
        group, option = missing.rsplit("/", 1)
        options = e.options or sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        if options:
            return f"{group}: unknown option {option!r}; allowed: {', '.join(sorted(options))}"
    # drop the search-path listing that follows Hydra's first line
    return _one_line(str(e).split("Config search path:")[0])


def _omegaconf_message(e: OmegaConfBaseException) -> str:
    """OmegaConf's multi-line error -> 'full.key: what went wrong'."""
    key = getattr(e, "full_key", None)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = re.sub(r"\s+", " ", first)
    cls = getattr(e, "object_type", None)
    if (
        isinstance(e, (ConfigKeyError, ConfigAttributeError))
        and cls is not None
        and dataclasses.is_dataclass(cls)
    ):
        first += f"; allowed: {', '.join(f.name for f in dataclasses.fields(cls))}"
    return f"{key}: {first}" if key else first


register()  # at import too: a process that only unpickles a job (joblib workers) can resolve
