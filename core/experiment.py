"""One experiment end to end: data -> network -> engine -> fit -> test -> files.

``run(cfg)`` is the function every entry point calls (run.py, the sweeper, tests). It
writes into ``out_dir`` (when given):
  metrics.csv   one row per epoch
  summary.json  final train/val/test metrics, best epoch, stop reason, seconds, engine, config
  model.npz     the checkpoint (best weights when early stopping restores them)
Drawing the curves is the caller's (run.py draws curves.png with app.figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as C
from .config import ConfigError, DataConfig, ExperimentConfig
from .data import Dataset, load_dataset
from .engines import make_engine, resolve_engine
from .network import build_spec, init_params
from .trainer import Callback, FitResult, fit


def resolve_loss(requested: str, ds: Dataset) -> str:
    if requested == "auto":
        return "cross_entropy" if ds.task == "classification" else "mse"
    if ds.task == "regression" and requested != "mse":
        raise ConfigError(f"trainer.loss: {requested!r} needs class labels; allowed for regression: mse")
    if requested == "bce" and ds.n_outputs != 2:
        raise ConfigError(
            f"trainer.loss: bce needs 2 classes, the data has {ds.n_outputs}; allowed: cross_entropy, mse"
        )
    return requested


def n_outputs(loss: str, ds: Dataset) -> int:
    return 1 if loss == "bce" else ds.n_outputs


def targets(y: np.ndarray, loss: str, n_out: int, dtype: str | np.dtype) -> np.ndarray:
    """Dense target matrix (n, n_out): one-hot classes, a 0/1 column for bce, or values."""
    if y.ndim == 2:  # regression values
        return y.astype(dtype)
    if loss == "bce":
        return y.reshape(-1, 1).astype(dtype)
    T = np.zeros((len(y), n_out), dtype=dtype)
    T[np.arange(len(y)), y] = 1
    return T


def split_targets(
    ds: Dataset, spec, dtype: str, splits: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, np.ndarray]:
    """The target matrix of each split (see ``targets``)."""
    return {s: targets(getattr(ds, s).y, spec.loss, spec.n_out, dtype) for s in splits}


def evaluate_splits(
    engine, ds: Dataset, T: dict, *, evaluate_test: bool, known: dict | None = None
) -> dict:
    """(loss, accuracy) of every split; test's is NaN unless ``evaluate_test``. ``known``
    holds splits' (loss, accuracy) of the engine's current weights measured already
    (``held_metrics``): those are not evaluated again."""
    known = known or {}
    splits = ("train", "val", "test") if evaluate_test else ("train", "val")
    final = {s: known[s] if s in known else engine.evaluate(getattr(ds, s).X, T[s])
             for s in splits}
    final.setdefault("test", (float("nan"), float("nan")))
    return final


def held_metrics(result: FitResult) -> dict:
    """``{"val": (loss, accuracy)}`` of the weights the engine holds after a one-fold ``fit``,
    from the history row of the epoch they come from: that row's val metrics are the same
    engine's evaluate of the same weights on the same split, a deterministic forward (fixed
    blocks on the CPU, tree sums without atomics on CUDA). Empty when that epoch's val loss
    is not finite (a diverged run is evaluated afresh)."""
    if not 1 <= result.params_epoch <= len(result.history):
        return {}
    row = result.history[result.params_epoch - 1]
    if not math.isfinite(row["val_loss"]):
        return {}
    return {"val": (row["val_loss"], row["val_accuracy"])}


def build(cfg: ExperimentConfig, ds: Dataset):
    """Network spec and initial parameters for this config and data set."""
    loss = resolve_loss(cfg.trainer.loss, ds)
    spec = build_spec(cfg.layers, cfg.regularization, n_in=ds.n_features, n_out=n_outputs(loss, ds), loss=loss)
    _check_size(spec, cfg)
    L = cfg.layers
    params = init_params(
        spec, init=L.init, distribution=L.distribution, scale=L.init_scale, seed=cfg.trainer.seed, dtype=cfg.trainer.dtype
    )
    return spec, params


# Below this many multiply-adds in a step's largest matrix product, a second BLAS thread
# costs more than it gives: waking it takes longer than the product, and on a busy machine
# (another search worker) its spinning can make a digits epoch 15-50x slower. Measured on the
# CPU engine (2 cores, OpenBLAS): 64-[120,40]-10 at batch 32 (0.25 M) 4.9 ms with either
# count; 64-[256,256]-10 at batch 64 (4.2 M) 23.5 ms with 1 thread, 15.4 ms with 2;
# 784-[256,128]-10 at batch 128 (25.7 M) 42.7 ms and 25.5 ms.
BLAS_THREADS_MIN_FMAS = 2**21


def blas_threads(cfg: ExperimentConfig, spec) -> int | None:
    """BLAS threads for this run: ``engine.threads`` when set; else one thread for small
    products, the library's default (None) for large ones."""
    if cfg.engine.threads is not None:
        return cfg.engine.threads
    sizes = [spec.n_in] + [layer.units for layer in spec.layers]
    fmas = max(cfg.trainer.batch_size * a * b for a, b in itertools.pairwise(sizes))
    return 1 if fmas < BLAS_THREADS_MIN_FMAS else None


_CONTROLLER = None


def blas_limit(cfg: ExperimentConfig, spec):
    """A context that holds every loaded BLAS at ``blas_threads(cfg, spec)`` threads."""
    return _threads(blas_threads(cfg, spec))


# an engine holds the parameters, their gradient, two optimizer moments and a best-weights
# copy, plus one (batch, units) activation buffer per layer: about PARAM_COPIES x the params
PARAM_COPIES = 6


def _check_size(spec, cfg: ExperimentConfig) -> None:
    """Refuse a network that cannot fit in this machine's memory, before allocating it."""
    from .datasets import memory_bytes

    have = memory_bytes()
    itemsize = 4 if cfg.trainer.dtype == "float32" else 8
    need = PARAM_COPIES * itemsize * spec.n_params
    if have is not None and need > have:
        raise ConfigError(
            f"layers.hidden: {list(cfg.layers.hidden)} makes {spec.n_params:,} parameters, about "
            f"{need / 2**30:.1f} GB to train; this machine has {have / 2**30:.1f} GB"
        )


def _threads(n: int | None):
    """Limit every loaded BLAS (NumPy's, and SciPy's that numba calls) to n threads."""
    global _CONTROLLER
    if n is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:  # scanning the loaded libraries costs ~4 ms: once per process
        import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot: load it before the scan)
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n)


_DATA: dict[tuple, Any] = {}  # this process's data sets, by config (a search's trials share them)


def cached_data(cfg: DataConfig, dtype: str, load: Callable[[], Any], *key: Any) -> Any:
    """``load()`` once per process for this data config, dtype and ``key`` (e.g. the
    number of folds), its arrays made read-only so no run can change another's data (the
    engines copy what they write to). A data file is re-read when its size or modification
    time changes."""
    full = (repr(cfg), dtype, *key)
    if cfg.path:
        path = Path(cfg.path)
        st = path.stat() if path.exists() else None
        full += ((st.st_size, st.st_mtime_ns) if st else None,)
    data = _DATA.get(full)
    if data is None:
        data = _freeze(load())
        if len(_DATA) >= 4:
            _DATA.pop(next(iter(_DATA)))
        _DATA[full] = data
    return data


def _freeze(obj: Any) -> Any:
    """Make every array inside a (tree of) dataclasses and lists read-only; return obj."""
    if isinstance(obj, np.ndarray):
        obj.setflags(write=False)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _freeze(item)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _freeze(getattr(obj, f.name))
    return obj


def cached_dataset(cfg: DataConfig, dtype: str) -> Dataset:
    """``load_dataset`` through cached_data."""
    return cached_data(cfg, dtype, lambda: load_dataset(cfg, dtype=dtype))


def run(
    cfg: ExperimentConfig,
    *,
    out_dir: str | Path | None = None,
    callbacks: tuple[Callback, ...] | list[Callback] = (),
    evaluate_test: bool = True,
) -> dict[str, Any]:
    """Train one network as configured; return the summary (also written to out_dir).

    ``evaluate_test=False`` leaves the test split untouched (NaN metrics): a search selects on
    validation only and evaluates just its best model on test, once.
    """
    start = time.perf_counter()
    engine_name = resolve_engine(cfg.engine.name)  # fail before loading data
    ds = cached_dataset(cfg.data, cfg.trainer.dtype)
    spec, params = build(cfg, ds)
    T = split_targets(ds, spec, cfg.trainer.dtype)
    engine = make_engine(cfg, spec, params)
    with blas_limit(cfg, spec):
        try:
            result = fit(engine, cfg, ds.train.X, T["train"], ds.val.X, T["val"], callbacks)
            final = evaluate_splits(engine, ds, T, evaluate_test=evaluate_test,
                                    known=held_metrics(result))
            final_params = engine.get_params()
        finally:
            engine.close()
    summary = make_summary(cfg, result, final, engine_name, spec.n_params, ds, time.perf_counter() - start)
    if out_dir is not None:
        write_outputs(Path(out_dir), cfg, result, summary, final_params, spec, ds)
    return summary


def make_summary(
    cfg: ExperimentConfig, result: FitResult, final: dict, engine: str, n_params: int, ds: Dataset, seconds: float
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split, (loss, acc) in final.items():
        summary[f"{split}_loss"] = loss
        summary[f"{split}_accuracy"] = acc
    summary.update(
        best_epoch=result.best_epoch,
        best_value=result.best_value,
        monitor=result.monitor,
        epochs_run=len(result.history),
        stop_reason=result.stop_reason,
        train_seconds=result.seconds,
        seconds=seconds,
        engine=engine,
        n_params=n_params,
        dataset=ds.name,
        task=ds.task,
    )
    return summary


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python, recursively, for strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_rows(rows: list[dict], path: Path) -> None:
    """Rows with the same keys as a CSV file, as pandas writes it (NaN as an empty field),
    without importing pandas: a search writes one per trial."""
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if rows:
            writer.writerow(rows[0])
        for row in rows:
            writer.writerow("" if isinstance(v, float) and math.isnan(v) else v for v in row.values())


def config_dict(cfg: ExperimentConfig) -> dict:
    """asdict(cfg) with a data file's path made absolute (found from any directory)."""
    config = asdict(cfg)
    if config["data"].get("path"):
        config["data"]["path"] = str(Path(config["data"]["path"]).resolve())
    return config


def checkpoint_of(params: np.ndarray, spec, ds: Dataset, cfg: ExperimentConfig, **meta: Any) -> C.Checkpoint:
    """A checkpoint of ``params`` standardized like ``ds``; ``meta`` adds to the usual meta."""
    base = {"dataset": ds.name, "feature_names": ds.feature_names, "image_shape": ds.image_shape,
            "config": config_dict(cfg)}
    return C.Checkpoint(params, spec, ds.mean, ds.std, ds.task, ds.classes, json_safe({**base, **meta}))


def write_run_files(out: Path, cfg: ExperimentConfig, result: FitResult, summary: dict) -> None:
    """metrics.csv and summary.json (with the config)."""
    out.mkdir(parents=True, exist_ok=True)
    write_rows(result.history, out / "metrics.csv")
    (out / "summary.json").write_text(json.dumps(json_safe({**summary, "config": config_dict(cfg)}), indent=2))


def write_outputs(
    out: Path, cfg: ExperimentConfig, result: FitResult, summary: dict, params: np.ndarray, spec, ds: Dataset
) -> None:
    """write_run_files and model.npz."""
    write_run_files(out, cfg, result, summary)
    C.save(out / "model.npz", checkpoint_of(params, spec, ds, cfg))
