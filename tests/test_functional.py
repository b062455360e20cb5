"""Activations, losses and penalties against central differences in float64."""

from __future__ import annotations

import numpy as np
import pytest

from core import functional as F
from core.config import ACTIVATIONS

rng = np.random.default_rng(0)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_matches_central_differences(name):
    z = rng.normal(size=(5, 4))
    z[np.abs(z) < 1e-3] = 0.5  # keep away from the kinks of relu / leaky_relu
    w = rng.normal(size=z.shape)  # a random linear read-out makes the check non-trivial
    f = lambda zz: float(np.sum(w * F.activate(name, zz, 0.1)))  # noqa: E731
    a = F.activate(name, z, 0.1)
    analytic = F.activation_backward(name, z, a, w, 0.1)
    np.testing.assert_allclose(analytic, numeric_grad(f, z.copy()), rtol=1e-6, atol=1e-8)


def test_activation_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(F.activate("relu", z), [[0, 0, 3]])
    np.testing.assert_allclose(F.activate("leaky_relu", z, 0.2), [[-0.4, 0, 3]])
    np.testing.assert_allclose(F.activate("sigmoid", z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(F.activate("tanh", z), np.tanh(z))
    np.testing.assert_allclose(F.activate("softmax", z), np.exp(z) / np.exp(z).sum())
    # stable for huge logits
    big = np.array([[1000.0, -1000.0]])
    assert np.all(np.isfinite(F.activate("softmax", big)))
    assert np.all(np.isfinite(F.activate("sigmoid", big)))


def targets_for(loss: str, n: int, k: int) -> np.ndarray:
    if loss == "cross_entropy":
        T = np.zeros((n, k))
        T[np.arange(n), rng.integers(0, k, n)] = 1
        return T
    if loss == "bce":
        return rng.integers(0, 2, (n, 1)).astype(float)
    return rng.normal(size=(n, k))


@pytest.mark.parametrize("loss,k", [("cross_entropy", 4), ("bce", 1), ("mse", 3), ("mse", 1)])
def test_loss_gradient_matches_central_differences(loss, k):
    logits = rng.normal(size=(6, k)) * 2
    T = targets_for(loss, 6, k)
    value, grad = F.loss_and_grad(loss, logits, T)
    np.testing.assert_allclose(grad, numeric_grad(lambda z: F.loss_value(loss, z, T), logits.copy()), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss,k", [("cross_entropy", 3), ("bce", 1), ("mse", 2)])
def test_loss_values_closed_form(loss, k):
    logits = rng.normal(size=(7, k))
    T = targets_for(loss, 7, k)
    if loss == "cross_entropy":
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        expected = -np.mean(np.log(p[T == 1]))
    elif loss == "bce":
        p = 1 / (1 + np.exp(-logits))
        expected = -np.mean(T * np.log(p) + (1 - T) * np.log(1 - p))
    else:
        expected = np.mean((logits - T) ** 2)
    assert F.loss_value(loss, logits, T) == pytest.approx(expected, rel=1e-12)


def test_losses_stay_finite_for_extreme_logits():
    logits = np.array([[800.0, -800.0], [-800.0, 800.0]])
    T = np.array([[0.0, 1.0], [0.0, 1.0]])
    value, grad = F.loss_and_grad("cross_entropy", logits, T)
    assert value == pytest.approx(800.0)
    assert np.all(np.isfinite(grad))
    value, grad = F.loss_and_grad("bce", np.array([[800.0], [-800.0]]), np.array([[0.0], [0.0]]))
    assert value == pytest.approx(400.0)


@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.3), (0.05, 0.2)])
def test_penalty_gradient(l1, l2):
    p = rng.normal(size=12)
    p[np.abs(p) < 1e-3] = 0.3
    mask = np.arange(12) % 3 != 0  # every third entry plays a bias
    g = F.penalty_grad(p, mask, l1, l2)
    np.testing.assert_allclose(g, numeric_grad(lambda x: F.penalty(x, mask, l1, l2), p.copy()), rtol=1e-6, atol=1e-9)
    assert np.all(g[~mask] == 0)
    assert F.penalty(p, mask, l1, l2) == pytest.approx(l1 * np.abs(p[mask]).sum() + 0.5 * l2 * (p[mask] ** 2).sum())
