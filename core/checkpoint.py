"""Checkpoints: parameters, network spec and data normalization in one .npz file.

Loading validates everything it reads and raises CheckpointError with one clear line; a
bad file is never half-loaded.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError
from .network import NetworkSpec

FORMAT = "nnsweep-checkpoint"
VERSION = 1


class CheckpointError(ConfigError):
    """A checkpoint file is missing, corrupt or does not match its spec."""


@dataclass
class Checkpoint:
    params: np.ndarray
    spec: NetworkSpec
    mean: np.ndarray  # (n_in,) standardization fitted on the training split
    std: np.ndarray
    task: str = "classification"
    classes: np.ndarray | None = None  # original label values, index i <-> class i
    meta: dict = field(default_factory=dict)  # dataset name, config, metrics: JSON-able

    def transform(self, X_raw: np.ndarray) -> np.ndarray:
        return ((np.asarray(X_raw, dtype=np.float64) - self.mean) / self.std).astype(self.params.dtype)


def save(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a checkpoint. The
    archive is built in memory and written at once: the same bytes as ``np.savez`` to the
    file, without its small writes and seeks per member (~0.2 ms of ~1.3 per trial)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "params": ckpt.params,
        "spec": np.array(ckpt.spec.to_json()),
        "mean": np.asarray(ckpt.mean, dtype=np.float64),
        "std": np.asarray(ckpt.std, dtype=np.float64),
        "task": np.array(ckpt.task),
        "meta": np.array(json.dumps(ckpt.meta, default=str)),
    }
    if ckpt.classes is not None:
        arrays["classes"] = np.asarray(ckpt.classes)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    if not path.exists():
        raise CheckpointError(f"checkpoint: no such file '{path}'")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"checkpoint: '{path}' is not a readable .npz checkpoint ({e})") from None
    missing = [k for k in ("format", "params", "spec", "mean", "std") if k not in data]
    if missing or str(data.get("format")) != FORMAT:
        raise CheckpointError(
            f"checkpoint: '{path}' is not an nnsweep checkpoint (missing {', '.join(missing) or 'format'})"
        )
    try:
        spec = NetworkSpec.from_json(str(data["spec"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint: '{path}' has a corrupt network spec ({e})") from None
    params, mean, std = data["params"], data["mean"], data["std"]
    if params.ndim != 1 or params.size != spec.n_params:
        raise CheckpointError(
            f"checkpoint: '{path}' params has {params.size} values; its spec needs {spec.n_params}"
        )
    if mean.shape != (spec.n_in,) or std.shape != (spec.n_in,):
        raise CheckpointError(
            f"checkpoint: '{path}' normalization has shape {mean.shape}; expected ({spec.n_in},)"
        )
    if params.dtype not in (np.float32, np.float64):
        raise CheckpointError(
            f"checkpoint: '{path}' params have dtype {params.dtype}; expected float32 or float64"
        )
    if not np.all(np.isfinite(params)):
        raise CheckpointError(f"checkpoint: '{path}' params contain NaN or inf")
    if not (_is_real(mean) and _is_real(std) and np.all(std > 0)):
        raise CheckpointError(
            f"checkpoint: '{path}' normalization is corrupt (mean and std must be finite numbers, "
            "std > 0)"
        )
    try:
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint: '{path}' has a corrupt meta (not JSON: {e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint: '{path}' has a corrupt meta (a JSON {type(meta).__name__}, "
            "expected an object)"
        )
    task = str(data.get("task", "classification"))
    if task not in TASKS:
        raise CheckpointError(
            f"checkpoint: '{path}' has task {task!r}; expected {' or '.join(TASKS)}"
        )
    classes = data.get("classes")
    if task == "classification":
        k = 2 if spec.loss == "bce" else spec.n_out  # bce: one output, p(class 1)
        n = "no" if classes is None else f"{classes.size}"
        if classes is None or classes.shape != (k,):
            raise CheckpointError(
                f"checkpoint: '{path}' has {n} class labels; its network tells {k} classes apart"
            )
    return Checkpoint(
        params=params,
        spec=spec,
        mean=mean,
        std=std,
        task=task,
        classes=classes,
        meta=meta,
    )


TASKS = ("classification", "regression")


def _is_real(a: np.ndarray) -> bool:
    """A float or int array with only finite values."""
    return a.dtype.kind in "fiu" and bool(np.all(np.isfinite(a)))
