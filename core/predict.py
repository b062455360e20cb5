"""Predictions from saved checkpoints: one model or an ensemble that averages probabilities.

A Predictor holds one or more checkpoints trained on the same data (same classes, same
features, same data config). ``scores`` is the averaged network output on standardized
features: class probabilities (softmax for cross_entropy; [1 - p, p] for bce), raw outputs
for a classifier trained with mse, or target values for regression. The data a checkpoint
was trained on is rebuilt from ``meta["config"]["data"]`` by core.data.load_dataset, which is
deterministic, and checked against the checkpoint's stored standardization.

Models of a cross-validation (core.crossval) are each standardized on their own fold; an
ensemble of them predicts from raw features (``scores_raw``), every member standardizing
them its own way. A model refit on train+val (core.final_model) records
``meta["standardized_on"] = "train+val"`` and its data is rebuilt accordingly.

Errors name this module's own parameters (``X_raw``, ``paths``, ``path``) unless the caller
passes ``field``: scripts/predict.py passes its flags (``--x``, ``--ensemble``, ``--input``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as C
from . import functional as F
from .config import ConfigError, DataConfig
from .datasets import check_file, load_csv, load_npz
from .network import predict_logits

__all__ = [
    "Features",
    "Predictor",
    "confusion_matrix",
    "ensemble_metrics",
    "evaluate_scores",
    "load_checkpoint",
    "load_predictor",
    "member_table",
    "read_features",
    "resolve_checkpoint",
]


def resolve_checkpoint(path: str | Path) -> Path:
    """model.npz for a file, a run folder, or a study folder (its best/ model)."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "model.npz", p / "best" / "model.npz"):
            if candidate.is_file():
                return candidate
        raise C.CheckpointError(f"checkpoint: no model.npz in '{p}' (nor in '{p / 'best'}')")
    if not p.exists():
        raise C.CheckpointError(f"checkpoint: no such file or folder '{p}'")
    return p


def load_checkpoint(path: str | Path) -> C.Checkpoint:
    return C.load(resolve_checkpoint(path))


def data_config(ckpt: C.Checkpoint, where: str) -> DataConfig:
    """The DataConfig the checkpoint was trained with, from its meta."""
    data = ckpt.meta.get("config", {}).get("data") if isinstance(ckpt.meta, dict) else None
    if not isinstance(data, dict):
        raise C.CheckpointError(
            f"checkpoint: '{where}' has no meta['config']['data'] to rebuild its data"
        )
    try:
        return DataConfig(**data)
    except TypeError as e:  # an unknown or missing field: written by another version
        raise C.CheckpointError(
            f"checkpoint: '{where}' has a data config this version cannot read ({e})"
        ) from None


class Predictor:
    """One checkpoint, or several averaged (an ensemble); ``names`` label the members.
    A member that does not fit the first is a ConfigError naming ``field``."""

    def __init__(
        self, ckpts: list[C.Checkpoint], names: list[str], *, field: str = "checkpoints"
    ) -> None:
        if not ckpts:
            raise ConfigError(f"{field}: needs at least one checkpoint")
        self.members, self.names = list(ckpts), list(names)
        first = ckpts[0]
        for ckpt, name in zip(ckpts[1:], names[1:], strict=True):
            _check_compatible(first, names[0], ckpt, name, field)
        self.task = first.task
        self.classes = first.classes  # (k,) original labels; None for regression
        self.n_features = first.spec.n_in
        self.path = names[0]
        meta = first.meta if isinstance(first.meta, dict) else {}
        self.dataset = str(meta.get("dataset", "?"))
        self.feature_names = [str(s) for s in meta.get("feature_names") or []] or [
            f"x{j}" for j in range(self.n_features)
        ]
        shape = meta.get("image_shape")
        self.image_shape = tuple(shape) if shape else None

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def labels(self) -> list[str]:
        """Class labels as text, index i <-> class i."""
        return [str(c) for c in self.classes] if self.classes is not None else []

    # ------------------------------------------------------------------ predicting

    def member_scores(self, X_std: np.ndarray) -> list[np.ndarray]:
        """Each member's output on standardized features: (n, k) scores or (n, n_targets)."""
        return [_scores(ckpt, X_std) for ckpt in self.members]

    def scores(self, X_std: np.ndarray) -> np.ndarray:
        """Averaged output (n, k): probabilities for cross_entropy/bce, values for regression."""
        return np.mean(self.member_scores(X_std), axis=0)

    def member_scores_raw(self, X_raw: np.ndarray, field: str = "X_raw") -> list[np.ndarray]:
        """Each member's output on raw features, standardized as that member was trained."""
        X_raw = self._raw(X_raw, field)
        return [_scores(ckpt, ckpt.transform(X_raw)) for ckpt in self.members]

    def scores_raw(self, X_raw: np.ndarray, field: str = "X_raw") -> np.ndarray:
        """Averaged output (n, k) on raw features; right for members of any standardization."""
        return np.mean(self.member_scores_raw(X_raw, field), axis=0)

    @property
    def shared_standardization(self) -> bool:
        """All members standardize alike (False for the fold models of a cross-validation)."""
        a = self.members[0]
        return all(
            np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
            for b in self.members[1:]
        )

    def standardize(self, X_raw: np.ndarray, field: str = "X_raw") -> np.ndarray:
        """Raw feature units -> the standardized inputs the networks saw in training."""
        X_raw = self._raw(X_raw, field)
        if not self.shared_standardization:
            raise ConfigError(
                f"{field}: the members are standardized differently (cross-validation folds); "
                "no single standardized input fits them all: predict from raw features"
            )
        return self.members[0].transform(X_raw)

    def _raw(self, X_raw: np.ndarray, field: str) -> np.ndarray:
        X_raw = np.atleast_2d(np.asarray(X_raw, dtype=np.float64))
        if X_raw.shape[1] != self.n_features:
            raise ConfigError(
                f"{field}: got {X_raw.shape[1]} feature values; the checkpoint expects "
                f"{self.n_features} ({_names(self.feature_names)})"
            )
        return X_raw

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        """(n,) predicted class index from (n, k) scores."""
        return np.argmax(scores, axis=1)

    def unstandardize(self, X_std: np.ndarray) -> np.ndarray:
        """Standardized features back to raw units (for plots in the data's own axes)."""
        ckpt = self.members[0]
        return np.asarray(X_std, dtype=np.float64) * ckpt.std + ckpt.mean

    # ------------------------------------------------------------------ data

    def load_data(self):
        """The data set of the first member, rebuilt and checked against its normalization."""
        from .data import load_dataset, refit_data

        ckpt = self.members[0]
        cfg = data_config(ckpt, self.path)
        on = ckpt.meta.get("standardized_on", "train") if isinstance(ckpt.meta, dict) else "train"
        if on == "train+val":  # a final model refit on train+val: train = train+val, no val
            ds = refit_data(cfg, dtype=str(ckpt.params.dtype))
        elif on != "train" or not self.shared_standardization:
            raise C.CheckpointError(
                f"checkpoint: '{self.path}' is a cross-validation fold model (standardized on "
                f"{on}); its test predictions come from raw features (Predictor.scores_raw)"
            )
        else:
            ds = load_dataset(cfg, dtype=str(ckpt.params.dtype))
        if ds.n_features != self.n_features or not (
            np.allclose(ds.mean, ckpt.mean, rtol=1e-9, atol=1e-12)
            and np.allclose(ds.std, ckpt.std, rtol=1e-9, atol=1e-12)
        ):
            raise C.CheckpointError(
                f"checkpoint: the data rebuilt from the config of '{self.path}' ({ds.name}) does "
                "not match the standardization stored in it (did the data file change?)"
            )
        return ds

    def frame(self, X_raw: np.ndarray, *, true: np.ndarray | None = None, field: str = "X_raw"):
        """Predictions as a DataFrame: predicted label and one probability column per class
        (score_<label> for a classifier trained with mse), or value columns for regression."""
        import pandas as pd

        S = self.scores_raw(X_raw, field)
        df = pd.DataFrame({"row": np.arange(len(S))})
        if true is not None:
            df["true"] = true
        if self.is_classifier:
            idx = self.predict_index(S)
            df["predicted"] = np.asarray(self.classes)[idx]
            prefix = "score" if self.members[0].spec.loss == "mse" else "prob"
            for j, label in enumerate(self.labels):
                df[f"{prefix}_{label}"] = S[:, j]
        elif S.shape[1] == 1:
            df["value"] = S[:, 0]
        else:
            for j in range(S.shape[1]):
                df[f"value_{j}"] = S[:, j]
        return df


def load_predictor(paths: list[str | Path], *, field: str = "paths") -> Predictor:
    """The checkpoints at ``paths`` (files, run or study folders) as one Predictor."""
    return Predictor([load_checkpoint(p) for p in paths], [str(p) for p in paths], field=field)


def _scores(ckpt: C.Checkpoint, X_std: np.ndarray) -> np.ndarray:
    X_std = np.asarray(X_std, dtype=ckpt.params.dtype)
    out = F.output(ckpt.spec.loss, predict_logits(ckpt.params, ckpt.spec, X_std))
    out = out.astype(np.float64)
    if ckpt.spec.loss == "bce":  # one sigmoid column p(class 1) -> (n, 2)
        out = np.column_stack([1.0 - out[:, 0], out[:, 0]])
    return out


def _check_compatible(
    a: C.Checkpoint, a_name: str, b: C.Checkpoint, b_name: str, field: str
) -> None:
    where = f"{field}: '{b_name}' does not match '{a_name}'"
    if a.task != b.task:
        raise ConfigError(f"{where}: task {b.task} vs {a.task}")
    if a.spec.n_in != b.spec.n_in:
        raise ConfigError(f"{where}: {b.spec.n_in} input features vs {a.spec.n_in}")
    same_classes = (a.classes is None) == (b.classes is None) and (
        a.classes is None or np.array_equal(a.classes, b.classes)
    )
    if not same_classes:
        raise ConfigError(f"{where}: classes {b.classes} vs {a.classes}")
    data_a, data_b = (ck.meta.get("config", {}).get("data") for ck in (a, b))
    if data_a != data_b:
        diff = sorted(
            k
            for k in set(data_a or {}) | set(data_b or {})
            if (data_a or {}).get(k) != (data_b or {}).get(k)
        )
        raise ConfigError(
            f"{where}: trained on different data (data.{', data.'.join(diff)} differ); "
            "an ensemble needs one test split"
        )


def _names(names: list[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[: limit - 2]) + f", ..., {names[-1]}"


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(k, k) int64 counts: row = true class index, column = predicted class index."""
    M = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(M, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return M


def evaluate_scores(predictor: Predictor, S: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) of scores ``S`` (n, k) of ``predictor`` against ``y``; accuracy NaN
    for regression. The one place accuracy is computed from a Predictor's output.

    The loss is the training loss of the scores: the mean negative log-likelihood of the
    probabilities (cross_entropy, bce), or the mean squared error over all outputs (mse;
    against one-hot rows for a classifier).
    """
    loss = predictor.members[0].spec.loss
    if loss == "mse":
        if predictor.is_classifier:
            T = np.zeros_like(S)
            T[np.arange(len(y)), y] = 1.0
        else:
            T = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        value = float(np.mean((S - T) ** 2))
    else:
        p = S[np.arange(len(y)), y]
        value = float(-np.mean(np.log(np.maximum(p, np.finfo(np.float64).tiny))))
    if not predictor.is_classifier:
        return value, float("nan")
    return value, float(np.mean(predictor.predict_index(S) == y))


def ensemble_metrics(
    predictor: Predictor, X_raw: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """(loss, accuracy) of the averaged output on raw features (see evaluate_scores)."""
    return evaluate_scores(predictor, predictor.scores_raw(X_raw), y)


def member_table(predictor: Predictor, X_std: np.ndarray, y: np.ndarray):
    """One row per member plus one for the ensemble: test accuracy (or mse for regression)."""
    import pandas as pd

    classifier = predictor.is_classifier
    metric = "test_accuracy" if classifier else "test_mse"

    def value(S: np.ndarray) -> float:
        loss, acc = evaluate_scores(predictor, S, y)
        return acc if classifier else loss  # a regression's loss is its mse

    member_scores = predictor.member_scores(X_std)
    rows = [
        {"model": f"member {i}", "checkpoint": name, metric: value(S)}
        for i, (name, S) in enumerate(zip(predictor.names, member_scores, strict=True))
    ]
    rows.append(
        {
            "model": "ensemble",
            "checkpoint": f"mean of {len(member_scores)}",
            metric: value(np.mean(member_scores, axis=0)),
        }
    )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- input files


@dataclass
class Features:
    X: np.ndarray  # (n, n_features) raw units, columns in the checkpoint's order
    y: np.ndarray | None  # labels or targets when the file has them


def read_features(
    path: str | Path, predictor: Predictor, *, label: str = "label", field: str = "path"
) -> Features:
    """Raw features from a .csv or .npz for prediction (read by core.datasets' reader);
    errors name ``field``.

    csv: the checkpoint's feature-name columns when all are present (any order, other
    columns ignored); otherwise every numeric column except ``label``, in file order, which
    must number exactly n_features. npz: array X (n, n_features), and y if stored.
    """
    p, ext = check_file(path, field)
    if ext == ".npz":
        arrays = load_npz(p, field)
        X, y = np.atleast_2d(arrays["X"]), arrays.get("y")
    else:
        X, y = _csv_features(load_csv(p, field), p, predictor, label, field)
    if X.ndim != 2 or X.shape[1] != predictor.n_features:
        raise ConfigError(
            f"{field}: {p.name} has X of shape {X.shape}; the checkpoint expects "
            f"{predictor.n_features} features ({_names(predictor.feature_names)})"
        )
    if len(X) == 0:
        raise ConfigError(f"{field}: {p.name} has no rows to predict")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ConfigError(f"{field}: {p.name} has NaN or inf in its features")
    if y is not None and len(y) != len(X):
        y = None
    return Features(X, y)


def _csv_features(
    df, p: Path, predictor: Predictor, label: str, field: str
) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    y = df[label].to_numpy() if label in df.columns else None
    names = predictor.feature_names
    if all(name in df.columns for name in names):
        cols = names
    else:
        cols = [c for c in df.columns if c != label and pd.api.types.is_numeric_dtype(df[c])]
        if len(cols) != predictor.n_features:
            raise ConfigError(
                f"{field}: {p.name} has {len(cols)} numeric feature columns ({_names(cols)}); "
                f"the checkpoint expects {predictor.n_features} ({_names(names)})"
            )
    return df[cols].to_numpy(dtype=np.float64), y
