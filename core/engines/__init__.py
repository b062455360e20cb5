"""Engine registry: config name -> engine class, imported lazily (numba is slow to import)."""

from __future__ import annotations

import functools
import importlib
import os
import sys

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


@functools.cache
def _driver_may_exist() -> bool:
    """False only where no CUDA driver can be: on Linux, no /dev/nvidia* device, no WSL GPU
    (/dev/dxg), no NUMBA_CUDA_DRIVER and no loadable libcuda. Importing numba.cuda to ask it
    costs ~0.8 s in every process (each search worker), so GPU-less machines skip it."""
    if not sys.platform.startswith("linux") or os.environ.get("NUMBA_CUDA_DRIVER"):
        return True
    if os.path.exists("/dev/dxg") or any(n.startswith("nvidia") for n in os.listdir("/dev")):
        return True
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


def cuda_available() -> bool:
    """A real CUDA GPU; the simulator, whose is_available() is also True, does not count."""
    if cuda_simulated() or not _driver_may_exist():
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
