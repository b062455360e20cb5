"""Inference latency of a network on an engine: microseconds per sample.

What a deployed model costs per request (batch 1) and per sample in bulk (batch 256), timed
through the engine's own ``predict_logits`` (the path every prediction takes), on random
inputs of the network's width: a dense network's time does not depend on the values.

Each batch size is warmed up once (compilation, caches), then timed ``repeats`` times; a
repeat runs enough calls to last ``min_seconds`` (a single batch-1 call is a few
microseconds, below the clock's useful resolution), and the median repeat is the result, so
a repeat slowed by another process on a shared machine does not move it. A saved network
is timed with one BLAS thread (``checkpoint_latency``): what one serving process per core
sees, and comparable between trials (a second thread that spins while the other core is
busy made batch 256 a hundred times slower in a search with two workers).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .engines.base import Engine

__all__ = ["BATCH_SIZES", "checkpoint_latency", "measure_latency"]

BATCH_SIZES = (1, 256)


def measure_latency(
    engine: Engine,
    n_in: int,
    *,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    repeats: int = 11,
    min_seconds: float = 1e-3,
    seed: int = 0,
) -> dict[int, float]:
    """{batch size: median microseconds per sample} of ``engine.predict_logits``."""
    rng = np.random.default_rng(seed)
    out = {}
    for batch in batch_sizes:
        X = rng.standard_normal((batch, n_in)).astype(engine.dtype)  # (batch, n_in)
        engine.predict_logits(X)  # warm-up
        calls = _calls_for(engine, X, min_seconds)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                engine.predict_logits(X)
            times.append(time.perf_counter() - start)
        out[batch] = statistics.median(times) / (calls * batch) * 1e6
    return out


def _calls_for(engine: Engine, X: np.ndarray, min_seconds: float) -> int:
    """Calls per repeat: doubled until a repeat lasts at least min_seconds."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            engine.predict_logits(X)
        if time.perf_counter() - start >= min_seconds or calls >= 2**16:
            return calls
        calls *= 2


def checkpoint_latency(path: str | Path, engine_name: str, *, threads: int | None = 1,
                       **kwargs) -> dict[int, float]:
    """measure_latency of a saved network (model.npz, or one fold model) on ``engine_name``,
    with ``threads`` BLAS threads (None: the library's default)."""
    from . import checkpoint as C
    from .config import OptimizerConfig, RegularizationConfig
    from .engines import engine_class, resolve_engine
    from .experiment import _threads

    ckpt = C.load(path)
    engine = engine_class(resolve_engine(engine_name))(
        ckpt.spec, ckpt.params, OptimizerConfig(), RegularizationConfig()
    )
    try:
        with _threads(threads):
            return measure_latency(engine, ckpt.spec.n_in, **kwargs)
    finally:
        engine.close()
