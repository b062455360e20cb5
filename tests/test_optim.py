"""Each optimizer against a hand-computed update on a small quadratic."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import OPTIMIZERS, ConfigError, OptimizerConfig
from core.optim import OPTIMIZER_CODES, OptimizerState, clip_by_global_norm, step

# f(p) = 0.5 * sum(a * p^2), gradient a * p
A = np.array([1.0, 4.0, 0.5])
P0 = np.array([1.0, -2.0, 3.0])
MASK = np.array([1.0, 1.0, 0.0])  # last entry plays a bias


def run(name: str, steps: int, lr: float = 0.1, **kw) -> np.ndarray:
    cfg = OptimizerConfig(name=name, lr=lr, **kw)
    p = P0.copy()
    state = OptimizerState.zeros(3, np.float64)
    for _ in range(steps):
        step(p, A * p, state, lr, cfg, MASK)
    return p


def reference(name: str, steps: int, lr=0.1, mu=0.9, b1=0.9, b2=0.999, eps=1e-8, alpha=0.99, wd=0.0):
    """Written independently, element by element, from the textbook formulas."""
    p = [float(x) for x in P0]
    out = []
    for j in range(3):
        x, m, v, buf = p[j], 0.0, 0.0, 0.0
        for t in range(1, steps + 1):
            g = A[j] * x
            if name == "sgd":
                x = x - lr * g
            elif name == "momentum":
                buf = mu * buf + g
                x = x - lr * buf
            elif name == "nesterov":
                buf = mu * buf + g
                x = x - lr * (g + mu * buf)
            elif name in ("adam", "adamw"):
                if name == "adamw":
                    x = x - lr * wd * x * MASK[j]
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            elif name == "rmsprop":
                v = alpha * v + (1 - alpha) * g * g
                x = x - lr * g / (np.sqrt(v) + eps)
        out.append(x)
    return np.array(out)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_update_matches_hand_computed(name, steps):
    kw = {"weight_decay": 0.1} if name == "adamw" else {}
    expected = reference(name, steps, wd=kw.get("weight_decay", 0.0))
    np.testing.assert_allclose(run(name, steps, **kw), expected, rtol=1e-12)


def test_first_steps_by_hand():
    # sgd: p1 = p0 - 0.1 * a * p0
    np.testing.assert_allclose(run("sgd", 1), [0.9, -1.2, 2.85])
    # adam's first step moves every coordinate by lr * sign(g) (up to eps)
    np.testing.assert_allclose(run("adam", 1), P0 - 0.1 * np.sign(A * P0), rtol=1e-7)
    # momentum, two steps: v1 = g0, v2 = 0.9 g0 + g1
    p1 = P0 - 0.1 * A * P0
    p2 = p1 - 0.1 * (0.9 * A * P0 + A * p1)
    np.testing.assert_allclose(run("momentum", 2), p2)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_descend_the_quadratic(name):
    p = run(name, 200, lr=0.05)
    assert 0.5 * np.sum(A * p**2) < 0.05 * 0.5 * np.sum(A * P0**2)


def test_registry_matches_config_names():
    assert tuple(OPTIMIZER_CODES) == OPTIMIZERS


def test_clip_by_global_norm():
    g = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip_by_global_norm(g, 1.0), [0.6, 0.8])
    np.testing.assert_allclose(clip_by_global_norm(g, 10.0), g)
    assert clip_by_global_norm(g, None) is g


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(name="lion"), "optimizer.name"),
        (dict(lr=-1.0), "optimizer.lr"),
        (dict(lr=0.0), "optimizer.lr"),
        (dict(momentum=1.5), "optimizer.momentum"),
        (dict(clip_norm=0.0), "optimizer.clip_norm"),
    ],
)
def test_bad_optimizer_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        OptimizerConfig(**kwargs)


def test_unknown_optimizer_lists_allowed():
    with pytest.raises(ConfigError) as e:
        OptimizerConfig(name="lion")
    assert "sgd, momentum, nesterov, adam, adamw, rmsprop" in str(e.value)
