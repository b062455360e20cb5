"""Engine registry: config name -> engine class, imported lazily (numba is slow to import)."""

from __future__ import annotations

import importlib

import numpy as np

from ..config import ENGINES, ConfigError, ExperimentConfig, check_choice
from ..network import NetworkSpec
from .base import Engine

__all__ = ["Engine", "make_engine", "resolve_engine", "ENGINE_CLASSES"]

# name -> "module:Class"; "auto" is resolved by resolve_engine
ENGINE_CLASSES = {
    "numpy": "core.engines.numpy_engine:NumpyEngine",
    "cpu": "core.engines.cpu:CpuEngine",
    "cuda": "core.engines.cuda:CudaEngine",
}


def cuda_simulated() -> bool:
    """Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): engine=cuda runs, slowly, on the CPU."""
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def cuda_available() -> bool:
    """A real CUDA GPU; the simulator, whose is_available() is also True, does not count."""
    if cuda_simulated():
        return False
    try:
        from numba import cuda
    except Exception:  # numba missing its CUDA bits entirely
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def resolve_engine(name: str) -> str:
    """The concrete engine for a config name; engine=cuda without a GPU is an error."""
    check_choice("engine.name", name, ENGINES)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not (cuda_available() or cuda_simulated()):
        raise ConfigError(
            "engine.name: cuda was asked for but numba.cuda.is_available() is False on this "
            "machine; use engine=cpu or engine=auto"
        )
    return name


def engine_class(name: str) -> type[Engine]:
    module, cls = ENGINE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_engine(cfg: ExperimentConfig, spec: NetworkSpec, params: np.ndarray) -> Engine:
    name = resolve_engine(cfg.engine.name)
    # cuda: engine.device, else $NNSWEEP_CUDA_DEVICE (set per --jobs worker), else 0
    extra = {"device": cfg.engine.device} if name == "cuda" else {}
    return engine_class(name)(spec, params, cfg.optimizer, cfg.regularization, seed=cfg.trainer.seed, **extra)
