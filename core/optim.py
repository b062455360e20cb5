"""Optimizer updates on the flat parameter vector (NumPy reference).

Conventions follow PyTorch so users get the behaviour they know:
  sgd       p -= lr * g
  momentum  v = mu * v + g;            p -= lr * v
  nesterov  v = mu * v + g;            p -= lr * (g + mu * v)
  adam      m, v moments, bias-corrected; p -= lr * m_hat / (sqrt(v_hat) + eps)
  adamw     p -= lr * wd * p (weights only), then the adam step
  rmsprop   v = alpha * v + (1 - alpha) g^2;  p -= lr * g / (sqrt(v) + eps)
The gradient g already holds the L1/L2 terms and is clipped to ``clip_norm`` (global L2
norm) before the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import OPTIMIZER_CODES, OptimizerConfig


@dataclass
class OptimizerState:
    m: np.ndarray  # first moment / velocity
    v: np.ndarray  # second moment
    t: int = 0  # steps taken (Adam's bias correction)

    @classmethod
    def zeros(cls, n: int, dtype: np.dtype) -> OptimizerState:
        return cls(np.zeros(n, dtype), np.zeros(n, dtype))


def clip_by_global_norm(g: np.ndarray, clip_norm: float | None) -> np.ndarray:
    if clip_norm is None:
        return g
    norm = float(np.sqrt(np.dot(g.astype(np.float64), g.astype(np.float64))))
    if norm > clip_norm:
        g = g * g.dtype.type(clip_norm / norm)
    return g


def step(
    params: np.ndarray,
    g: np.ndarray,
    state: OptimizerState,
    lr: float,
    cfg: OptimizerConfig,
    weight_mask: np.ndarray,
) -> None:
    """One in-place update of ``params`` with gradient ``g``."""
    dt = params.dtype.type
    lr_ = dt(lr)
    state.t += 1
    name = cfg.name
    if name == "sgd":
        params -= lr_ * g
    elif name in ("momentum", "nesterov"):
        mu = dt(cfg.momentum)
        state.m *= mu
        state.m += g
        params -= lr_ * (g + mu * state.m if name == "nesterov" else state.m)
    elif name in ("adam", "adamw"):
        if name == "adamw" and cfg.weight_decay > 0:
            params -= (lr_ * dt(cfg.weight_decay)) * params * weight_mask
        b1, b2 = dt(cfg.beta1), dt(cfg.beta2)
        state.m *= b1
        state.m += (1 - b1) * g
        state.v *= b2
        state.v += (1 - b2) * g * g
        c1 = 1.0 - cfg.beta1**state.t
        c2 = 1.0 - cfg.beta2**state.t
        params -= dt(lr / c1) * state.m / (np.sqrt(state.v / dt(c2)) + dt(cfg.eps))
    elif name == "rmsprop":
        a = dt(cfg.alpha)
        state.v *= a
        state.v += (1 - a) * g * g
        params -= lr_ * g / (np.sqrt(state.v) + dt(cfg.eps))
    else:
        raise ValueError(f"optimizer.name: unknown {name!r}; allowed: {', '.join(OPTIMIZER_CODES)}")
