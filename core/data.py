"""A DataConfig becomes a Dataset: raw arrays, split train/val/test, standardized on train.

Raw sources (generators, digits, files) live in ``core.datasets``; this module adds what
every source shares: the task, label encoding, a stratified three-way split and
standardization. The same DataConfig always gives bit-identical arrays.

Task rule for ``data.task=auto``: built-in sets are classification (the generated
"regression" curve is regression). For a file, y is a class label when it is text or bool,
or a single column of integer values (int dtype, or floats that are all whole numbers)
with at most MAX_AUTO_CLASSES distinct values; anything else (fractional values, more
distinct integers, several target columns) is a regression target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import DTYPES, ConfigError, DataConfig, check_choice, check_range
from core.datasets import (
    DIGITS_IMAGE_SHAPE,
    GENERATED,
    REGRESSION_SETS,
    digits,
    feature_names,
    generate,
    read_file,
    write_file,
)

__all__ = ["Dataset", "RawData", "Split", "generate", "load_dataset", "load_raw", "make_dataset",
           "pool_parts", "raw_test_split", "read_file", "refit_data", "split_indices",
           "split_parts", "write_file"]

MAX_AUTO_CLASSES = 100


@dataclass
class Split:
    X: np.ndarray  # (n, n_features), the requested dtype
    y: np.ndarray  # (n,) int64 class index, or (n, n_targets) float regression target


@dataclass
class Dataset:
    name: str  # the DataConfig name, or the file name for data=file
    task: str  # "classification" | "regression"
    train: Split
    val: Split
    test: Split
    n_features: int
    n_outputs: int  # number of classes, or of target columns
    mean: np.ndarray  # (n_features,) float64, fitted on train (zeros if not standardized)
    std: np.ndarray  # (n_features,) float64, fitted on train, 0 -> 1 (ones if not standardized)
    classes: np.ndarray | None  # original label of class index i (classification only)
    feature_names: list[str]
    image_shape: tuple[int, int] | None  # (8, 8) for digits

    def transform(self, X_raw: np.ndarray) -> np.ndarray:
        """Standardize raw features like the training split: (X_raw - mean) / std."""
        X_raw = np.asarray(X_raw, dtype=np.float64)
        if X_raw.ndim != 2 or X_raw.shape[1] != self.n_features:
            raise ValueError(
                f"expected raw features of shape (n, {self.n_features}), got {X_raw.shape}"
            )
        return ((X_raw - self.mean) / self.std).astype(self.train.X.dtype)


@dataclass
class RawData:
    """A source's samples before any split: labels encoded, features in raw units."""

    name: str  # the DataConfig name, or the file name for data=file
    task: str  # "classification" | "regression"
    X: np.ndarray  # (n, n_features) raw units
    y: np.ndarray  # (n,) int64 class index, or (n, n_targets) regression target in the dtype
    classes: np.ndarray | None  # original label of class index i (classification only)
    feature_names: list[str]
    image_shape: tuple[int, int] | None

    @property
    def strata(self) -> np.ndarray | None:
        """What a split stratifies on: the class index, or None for regression."""
        return self.y if self.task == "classification" else None


def load_dataset(cfg: DataConfig, dtype: str = "float32") -> Dataset:
    """The source, split train/val/test (``split_parts``), standardized on train."""
    raw = load_raw(cfg, dtype)
    return make_dataset(raw, split_parts(raw, cfg), standardize=cfg.standardize, dtype=dtype)


def load_raw(cfg: DataConfig, dtype: str = "float32") -> RawData:
    """The samples of ``cfg``'s source, labels encoded, features unstandardized."""
    check_choice("trainer.dtype", dtype, DTYPES)
    check_range("data.seed", cfg.seed, low=0, high=2**32 - 1)
    image_shape = None
    if cfg.name == "file":
        assert cfg.path is not None  # DataConfig requires it
        X, y, names = read_file(cfg.path, label=cfg.label)
        name = Path(cfg.path).name
        task = cfg.task if cfg.task != "auto" else infer_task(y)
    else:
        if cfg.name == "digits":
            X, y, names = digits()
            image_shape = DIGITS_IMAGE_SHAPE
        elif cfg.name in GENERATED:
            X, y = generate(
                cfg.name, n_samples=cfg.n_samples, noise=cfg.noise, n_classes=cfg.n_classes,
                n_features=cfg.n_features, seed=cfg.seed,
            )
            names = feature_names(X.shape[1])
        else:
            raise ConfigError(f"data.name: no loader for {cfg.name!r}")
        name = cfg.name
        task = "regression" if cfg.name in REGRESSION_SETS else "classification"
        if cfg.task not in ("auto", task):
            raise ConfigError(f"data.task: data.name={cfg.name} is a {task} set; use auto")

    where = name if cfg.name == "file" else f"data.name={cfg.name}"
    classes = None
    if task == "classification":
        classes, y = encode_labels(y, where)
    else:
        y = regression_target(y, where).astype(dtype)
    return RawData(
        name=name, task=task, X=X, y=y, classes=classes, feature_names=names,
        image_shape=image_shape,
    )


def split_parts(raw: RawData, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (train, val, test) indices into ``raw`` for ``cfg``'s fractions and seed."""
    rng = np.random.default_rng([cfg.seed, 1])  # a stream apart from the generator's
    fractions = (1.0 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    parts = split_indices(len(raw.X), fractions, rng, strata=raw.strata)
    fields = ("data.val_fraction + data.test_fraction", "data.val_fraction", "data.test_fraction")
    for part, field, split, frac in zip(parts, fields, ("train", "val", "test"), fractions):
        if len(part) == 0:
            raise ConfigError(
                f"{field}: leaves the {split} split empty ({frac:g} of {len(raw.X)} samples)"
            )
    return parts


def pool_parts(cfg: DataConfig, dtype: str = "float32") -> tuple[RawData, np.ndarray, np.ndarray]:
    """Raw data, the train+val indices (train first: cross-validation's pool) and the test
    indices."""
    raw = load_raw(cfg, dtype)
    train, val, test = split_parts(raw, cfg)
    return raw, np.concatenate([train, val]), test


def refit_data(cfg: DataConfig, dtype: str = "float32") -> Dataset:
    """Train = train+val (standardized on it), no val, the usual test: for a model refit on
    all of train+val (core.final_model.refit)."""
    raw, pool, test = pool_parts(cfg, dtype)
    return make_dataset(raw, (pool, test[:0], test), standardize=cfg.standardize, dtype=dtype)


def raw_test_split(cfg: DataConfig, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The test split in raw units and its targets: (X_raw (n, n_features), y)."""
    raw, _, test = pool_parts(cfg, dtype)
    return raw.X[test], raw.y[test]


def make_dataset(
    raw: RawData,
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    standardize: bool,
    dtype: str,
) -> Dataset:
    """A Dataset of ``raw``'s (train, val, test) index parts, standardized on the train part.

    A part may be empty (a model refit on train+val has no val split).
    """
    train_idx = parts[0]
    X, y = raw.X, raw.y
    if standardize:
        mean = X[train_idx].mean(axis=0)
        std = X[train_idx].std(axis=0)
        std[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0  # constant feature: centre only
    else:
        mean, std = np.zeros(X.shape[1]), np.ones(X.shape[1])
    Xs = ((X - mean) / std).astype(dtype)
    train, val, test = (Split(Xs[idx], y[idx]) for idx in parts)
    n_outputs = len(raw.classes) if raw.classes is not None else y.shape[1]
    return Dataset(
        name=raw.name, task=raw.task, train=train, val=val, test=test, n_features=X.shape[1],
        n_outputs=n_outputs, mean=mean, std=std, classes=raw.classes,
        feature_names=raw.feature_names, image_shape=raw.image_shape,
    )


def infer_task(y: np.ndarray) -> str:
    """The data.task=auto rule for files (see the module docstring)."""
    if y.dtype.kind in "USb":
        return "classification"
    if y.ndim == 2 and y.shape[1] != 1:
        return "regression"
    if not _integer_valued(y):
        return "regression"
    return "classification" if len(np.unique(y)) <= MAX_AUTO_CLASSES else "regression"


def _integer_valued(y: np.ndarray) -> bool:
    if y.dtype.kind in "iub":
        return True
    return y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))


def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(classes, index): class index i <-> classes[i], classes sorted as np.unique sorts."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(
            f"data.task: classification needs one label column; {where} has y of shape {y.shape}"
        )
    if y.dtype.kind not in "USb" and not _integer_valued(y):
        raise ConfigError(
            f"data.task: classification needs integer or text labels; {where} has "
            f"fractional values (e.g. {y[y != np.round(y)][0]!r}); use data.task=regression"
        )
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ConfigError(
            f"data.task: {where} has a single class ({classes[0]!r}); classification needs 2"
        )
    if classes.dtype.kind == "f":
        classes = classes.astype(np.int64)
    return classes, index.reshape(-1).astype(np.int64)


def regression_target(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind not in "iuf":
        raise ConfigError(f"data.task: regression needs a numeric target; {where} has text labels")
    return y.reshape(len(y), -1)  # (n, n_targets)


def split_indices(
    n: int,
    fractions: tuple[float, float, float],
    rng: np.random.Generator,
    *,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled (train, val, test) indices, stratified by ``strata`` (class index per sample).

    Each class is cut by largest remainder, so every split holds floor or ceil of
    fraction * class size; which split gets a class's leftover samples follows the running
    deficit over all classes, so the split sizes also stay within ~1 of fraction * n.
    """
    f = np.asarray(fractions, dtype=np.float64)
    strata = np.zeros(n, dtype=np.int64) if strata is None else strata
    assigned = np.zeros(3, dtype=np.int64)  # samples given to each split so far
    seen = 0
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for c in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == c))
        share = f * len(idx)
        counts = np.floor(share + 1e-9).astype(np.int64)
        seen += len(idx)
        extra = len(idx) - int(counts.sum())
        if extra:
            open_ = np.flatnonzero(share - counts > 1e-9)  # splits allowed to round up
            deficit = f[open_] * seen - (assigned[open_] + counts[open_])
            counts[open_[np.argsort(-deficit, kind="stable")[:extra]]] += 1
        assigned += counts
        for part, chunk in zip(parts, np.split(idx, np.cumsum(counts)[:-1])):
            part.append(chunk)
    train, val, test = (rng.permutation(np.concatenate(p)) for p in parts)
    return train, val, test
