"""The NumPy reference engine against things that do not come from it.

Every other engine is tested against this one (tests/engine_contract.py), so it cannot be
tested by the contract itself: that compares it with itself. Here it meets
  - a float64 re-derivation written out below with plain NumPy (forward, backward, the L1/L2
    terms, clipping and every optimizer's update rule in PyTorch's conventions),
  - central differences of the loss it reports,
  - the closed form of least squares, where a linear model with mse must end up.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import network as N
from core.config import OPTIMIZERS, OptimizerConfig, RegularizationConfig
from core.engines.numpy_engine import NumpyEngine

N_IN, HIDDEN, K = 4, 5, 3  # a tanh hidden layer, softmax cross-entropy over K classes


def tiny_net(seed: int = 0, *, dropout: float = 0.0) -> tuple[N.NetworkSpec, np.ndarray]:
    spec = N.NetworkSpec(
        N_IN, (N.LayerSpec(HIDDEN, "tanh", dropout), N.LayerSpec(K, "softmax")), "cross_entropy"
    )
    rng = np.random.default_rng(seed)
    return spec, rng.normal(scale=0.5, size=spec.n_params)  # biases nonzero too


def data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, N_IN)), np.eye(K)[rng.integers(0, K, n)]  # X, one-hot T


# ---------------------------------------------------------------- the re-derivation

SIZES = [N_IN * HIDDEN, HIDDEN, HIDDEN * K, K]  # the flat layout: W1, b1, W2, b2


def unpack(p: np.ndarray) -> tuple[np.ndarray, ...]:
    W1, b1, W2, b2 = np.split(p, np.cumsum(SIZES)[:-1])
    return W1.reshape(N_IN, HIDDEN), b1, W2.reshape(HIDDEN, K), b2


def weights(p: np.ndarray) -> np.ndarray:
    """1 on the weights, 0 on the biases (penalties and decoupled decay skip biases)."""
    return np.concatenate([np.ones(SIZES[0]), np.zeros(SIZES[1]), np.ones(SIZES[2]),
                           np.zeros(SIZES[3])])


def forward(p: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    W1, b1, W2, b2 = unpack(p)
    H = np.tanh(X @ W1 + b1)  # (n, HIDDEN)
    return H, H @ W2 + b2  # logits (n, K)


def loss_and_grad(p: np.ndarray, X, T, l1=0.0, l2=0.0) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy (no penalty in the value, as the engine reports it) and the
    gradient of loss + l1 |W| + l2/2 W^2, by hand."""
    W1, b1, W2, b2 = unpack(p)
    n = len(X)
    H, Z = forward(p, X)
    Z = Z - Z.max(axis=1, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    dZ = (np.exp(logp) - T) / n  # (n, K)
    dH = dZ @ W2.T * (1 - H * H)  # through tanh, (n, HIDDEN)
    g = np.concatenate([(X.T @ dH).ravel(), dH.sum(0), (H.T @ dZ).ravel(), dZ.sum(0)])
    g += weights(p) * (l1 * np.sign(p) + l2 * p)
    return float(-np.sum(T * logp) / n), g


def update(p, g, state: dict, lr: float, o: OptimizerConfig) -> np.ndarray:
    """One step of ``o.name`` in PyTorch's conventions; ``state`` holds m, v and t."""
    state["t"] += 1
    t, m, v = state["t"], state["m"], state["v"]
    if o.name == "sgd":
        return p - lr * g
    if o.name in ("momentum", "nesterov"):
        state["m"] = m = o.momentum * m + g
        return p - lr * (g + o.momentum * m if o.name == "nesterov" else m)
    if o.name == "rmsprop":
        state["v"] = v = o.alpha * v + (1 - o.alpha) * g * g
        return p - lr * g / (np.sqrt(v) + o.eps)
    if o.name == "adamw":
        p = p - lr * o.weight_decay * p * weights(p)  # decoupled, before the moments
    state["m"] = m = o.beta1 * m + (1 - o.beta1) * g
    state["v"] = v = o.beta2 * v + (1 - o.beta2) * g * g
    m_hat, v_hat = m / (1 - o.beta1**t), v / (1 - o.beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + o.eps)


def train_by_hand(p, X, T, order, lrs, batch, o: OptimizerConfig, reg: RegularizationConfig):
    """An epoch by hand: (params, mean loss over the samples, accuracy on the minibatches)."""
    state = {"t": 0, "m": np.zeros_like(p), "v": np.zeros_like(p)}
    total, correct = 0.0, 0
    for i, start in enumerate(range(0, len(order), batch)):
        idx = order[start : start + batch]
        loss, g = loss_and_grad(p, X[idx], T[idx], reg.l1, reg.l2)
        correct += int(np.sum(forward(p, X[idx])[1].argmax(1) == T[idx].argmax(1)))
        norm = np.linalg.norm(g)
        if o.clip_norm is not None and norm > o.clip_norm:
            g = g * (o.clip_norm / norm)
        p = update(p, g, state, lrs[i], o)
        total += loss * len(idx)
    return p, total / len(order), correct / len(order)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("extras", ["plain", "l1_l2_clip"])
def test_an_epoch_equals_the_rederivation(name: str, extras: str) -> None:
    """Three minibatches (the last one short) with a different lr each."""
    clip = extras == "l1_l2_clip"
    opt = OptimizerConfig(name=name, lr=0.1, weight_decay=0.1 if name == "adamw" else 0.0,
                          clip_norm=0.05 if clip else None)
    reg = RegularizationConfig(l1=0.01, l2=0.05) if clip else RegularizationConfig()
    spec, p0 = tiny_net()
    X, T = data(21)
    order = np.random.default_rng(2).permutation(21)
    lrs = np.array([0.1, 0.05, 0.02])
    engine = NumpyEngine(spec, p0, opt, reg)
    engine.set_train_data(X, T)
    loss, acc = engine.train_epoch(order, lrs, 8)
    p, hand_loss, hand_acc = train_by_hand(p0, X, T, order, lrs, 8, opt, reg)
    np.testing.assert_allclose(engine.get_params(), p, rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(hand_loss, rel=1e-12) and acc == pytest.approx(hand_acc)
    assert not np.allclose(p, p0)  # the epoch moved the weights: the check is not vacuous


def test_predict_and_evaluate_equal_the_hand_forward() -> None:
    spec, p = tiny_net(3)
    X, T = data(30)
    engine = NumpyEngine(spec, p, OptimizerConfig(), RegularizationConfig())
    logits = forward(p, X)[1]
    np.testing.assert_allclose(engine.predict_logits(X), logits, rtol=1e-12)
    loss, acc = engine.evaluate(X, T)
    assert loss == pytest.approx(loss_and_grad(p, X, T)[0], rel=1e-12)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == T.argmax(1)))
    new = np.random.default_rng(4).normal(size=p.size)
    engine.set_params(new)
    np.testing.assert_array_equal(engine.get_params(), new)
    np.testing.assert_allclose(engine.predict_logits(X), forward(new, X)[1], rtol=1e-12)


# ---------------------------------------------------------------- central differences

NETS = [  # (hidden activation, loss): every activation, every loss
    ("relu", "cross_entropy"),
    ("leaky_relu", "mse"),
    ("sigmoid", "bce"),
    ("tanh", "cross_entropy"),
    ("linear", "mse"),
    ("softmax", "cross_entropy"),
]


def targets(loss: str, n: int, k: int, rng) -> np.ndarray:
    if loss == "cross_entropy":
        return np.eye(k)[rng.integers(0, k, n)]
    if loss == "bce":
        return rng.integers(0, 2, (n, 1)).astype(np.float64)
    return rng.normal(size=(n, k))


@pytest.mark.parametrize(("act", "loss"), NETS)
def test_the_gradient_it_descends_is_that_of_the_loss_it_reports(act: str, loss: str) -> None:
    """One full-batch SGD step with lr 1 moves the weights by minus the gradient; central
    differences of evaluate()'s loss plus the penalty give the same vector."""
    out = {"cross_entropy": "softmax", "bce": "sigmoid", "mse": "linear"}[loss]
    k = 1 if loss == "bce" else 3
    spec = N.NetworkSpec(3, (N.LayerSpec(4, act), N.LayerSpec(3, act), N.LayerSpec(k, out)),
                         loss, leaky_slope=0.1)
    rng = np.random.default_rng(5)
    p0 = rng.normal(scale=0.7, size=spec.n_params)
    X, T = rng.normal(size=(9, 3)), targets(loss, 9, k, rng)
    l1, l2 = 0.01, 0.03
    reg = RegularizationConfig(l1=l1, l2=l2)
    engine = NumpyEngine(spec, p0, OptimizerConfig(name="sgd", lr=1.0), reg)
    engine.set_train_data(X, T)
    engine.train_epoch(np.arange(9), np.array([1.0]), 9)
    descended = p0 - engine.get_params()

    mask = spec.weight_mask()

    def penalized_loss(p: np.ndarray) -> float:
        engine.set_params(p)
        w = p[mask]
        return engine.evaluate(X, T)[0] + l1 * np.abs(w).sum() + 0.5 * l2 * (w * w).sum()

    h, numeric = 1e-6, np.empty_like(p0)
    for i in range(p0.size):
        e = np.zeros_like(p0)
        e[i] = h
        numeric[i] = (penalized_loss(p0 + e) - penalized_loss(p0 - e)) / (2 * h)
    np.testing.assert_allclose(descended, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- a closed form


def test_linear_mse_full_batch_sgd_reaches_least_squares() -> None:
    """No hidden layer and mse: gradient descent on a convex quadratic ends at the
    least-squares solution of [X 1] [W; b] = T (np.linalg.lstsq), loss at its residual."""
    rng = np.random.default_rng(6)
    n, d, k = 64, 3, 2
    X = rng.normal(size=(n, d))
    T = X @ rng.normal(size=(d, k)) + 0.3 + 0.1 * rng.normal(size=(n, k))
    spec = N.NetworkSpec(d, (N.LayerSpec(k, "linear"),), "mse")
    engine = NumpyEngine(spec, np.zeros(spec.n_params), OptimizerConfig(name="sgd"),
                         RegularizationConfig())
    engine.set_train_data(X, T)
    steps = 3000
    engine.train_epoch(np.tile(np.arange(n), steps), np.full(steps, 0.5), n)  # one step per batch
    A = np.column_stack([X, np.ones(n)])
    solution, *_ = np.linalg.lstsq(A, T, rcond=None)  # (d + 1, k): W then b
    W, b = engine.get_params()[: d * k].reshape(d, k), engine.get_params()[d * k :]
    np.testing.assert_allclose(W, solution[:d], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, solution[d], rtol=1e-8, atol=1e-10)
    residual = np.mean((A @ solution - T) ** 2)
    assert engine.evaluate(X, T)[0] == pytest.approx(residual, rel=1e-8)


# ---------------------------------------------------------------- dropout


def test_dropout_is_reproducible_by_seed_and_off_when_predicting() -> None:
    spec, p0 = tiny_net(dropout=0.5)
    X, T = data(21)
    opt = OptimizerConfig(name="sgd", lr=0.1)

    def trained(seed: int) -> NumpyEngine:
        engine = NumpyEngine(spec, p0, opt, RegularizationConfig(dropout=0.5), seed=seed)
        engine.set_train_data(X, T)
        engine.train_epoch(np.arange(21), np.full(3, 0.1), 8)
        return engine

    a, b, c = trained(3), trained(3), trained(4)
    np.testing.assert_array_equal(a.get_params(), b.get_params())
    assert not np.allclose(a.get_params(), c.get_params())  # other seed, other masks
    without = train_by_hand(p0, X, T, np.arange(21), np.full(3, 0.1), 8, opt,
                            RegularizationConfig())[0]
    assert not np.allclose(a.get_params(), without)  # the masks changed the training
    p = a.get_params()
    np.testing.assert_allclose(a.predict_logits(X), forward(p, X)[1], rtol=1e-12)
