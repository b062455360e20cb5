"""The contestants of scripts/benchmark.py: nnsweep engines and the baselines.

Each ``train_*`` function builds a fresh model of ``sizes`` (ReLU hidden layers, softmax
cross-entropy, He init), then trains it for ``epochs`` epochs of shuffled minibatches with Adam
at a constant learning rate, and returns the seconds the training loop took (model building
and compilation excluded; shuffling included). All work in float32 on the same arrays:
X (n, n_in) float32, y (n,) int64 labels, Y (n, n_out) float32 one-hot rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise

import numpy as np
from numba import njit

Trainer = Callable[[np.ndarray, np.ndarray, np.ndarray, tuple, int, int, float, int], float]


def train_nnsweep(engine_name: str) -> Trainer:
    """nnsweep through its engine API: one ``train_epoch`` call per epoch."""

    def train(X, y, Y, sizes, batch, epochs, lr, seed, dropout: float = 0.0,
              activation: str = "relu") -> float:
        from core import network as N
        from core.config import OptimizerConfig, RegularizationConfig
        from core.engines import engine_class

        hidden = tuple(N.LayerSpec(u, activation, dropout) for u in sizes[1:-1])
        output = N.LayerSpec(sizes[-1], "softmax")
        spec = N.NetworkSpec(sizes[0], hidden + (output,), "cross_entropy")
        params = N.init_params(spec, init="he", seed=seed, dtype="float32")
        opt = OptimizerConfig(name="adam", lr=lr)
        engine = engine_class(engine_name)(spec, params, opt, RegularizationConfig(), seed=seed)
        engine.set_train_data(X, Y)
        try:  # the trainer's epoch orders: rng.permutation's arrays, compiled
            from core.shuffle import Permutations

            order = Permutations(seed)
        except ImportError:  # a revision before core.shuffle (--before): NumPy's own
            order = np.random.default_rng(seed).permutation
        n = len(X)
        lrs = np.full(-(-n // batch), lr)
        start = time.perf_counter()
        for _ in range(epochs):
            engine.train_epoch(order(n), lrs, batch)
        seconds = time.perf_counter() - start
        engine.close()
        return seconds

    return train


def train_numpy_loop(X, y, Y, sizes, batch, epochs, lr, seed) -> float:
    """The obvious NumPy training loop, the way one writes it by hand."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    Ws = [rng.normal(0, np.sqrt(2 / a), (a, b)).astype(f32) for a, b in pairwise(sizes)]
    bs = [np.zeros(b, f32) for b in sizes[1:]]
    params = Ws + bs
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    b1, b2, eps, t = 0.9, 0.999, 1e-8, 0
    n = len(X)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = rng.permutation(n)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            x, target = X[idx], Y[idx]
            acts = [x]
            for W, b in zip(Ws[:-1], bs[:-1]):
                x = np.maximum(x @ W + b, 0)
                acts.append(x)
            logits = x @ Ws[-1] + bs[-1]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            g = (e / e.sum(axis=1, keepdims=True) - target) / len(idx)
            dWs, dbs = [None] * len(Ws), [None] * len(Ws)
            for layer in range(len(Ws) - 1, -1, -1):
                dWs[layer] = acts[layer].T @ g
                dbs[layer] = g.sum(axis=0)
                if layer > 0:
                    g = (g @ Ws[layer].T) * (acts[layer] > 0)
            t += 1
            for p, grad, m, v in zip(params, dWs + dbs, ms, vs):
                m *= b1
                m += (1 - b1) * grad
                v *= b2
                v += (1 - b2) * grad * grad
                p -= (lr / (1 - b1**t)) * m / (np.sqrt(v / (1 - b2**t)) + eps)
    return time.perf_counter() - start


@njit
def _products_epoch(X, Ws, acts, grads, dWs, batch):
    """One epoch of train_products_only's products (compiled: no Python call per product)."""
    n = X.shape[0]
    for i in range(0, n, batch):
        bs = min(batch, n - i)
        x = X[i : i + bs]
        for layer in range(len(Ws)):
            a = x if layer == 0 else acts[layer - 1][:bs]
            np.dot(a, Ws[layer], acts[layer][:bs])
        for layer in range(len(Ws) - 1, -1, -1):
            a = x if layer == 0 else acts[layer - 1][:bs]
            np.dot(a.T, grads[layer][:bs], dWs[layer])
            if layer > 0:
                np.dot(grads[layer][:bs], Ws[layer].T, grads[layer - 1][:bs])


def train_products_only(X, y, Y, sizes, batch, epochs, lr, seed) -> float:
    """The matrix products of the training steps and nothing else: per minibatch a @ W for
    every layer, a_prev.T @ dz for every layer and dz @ W.T for all but the first (exactly
    what Workload.flops counts), through the BLAS numba's np.dot calls (the CPU engine's),
    into preallocated arrays from a compiled loop. No gather (rows in order), loss,
    activation or update: a time no engine built on this BLAS can beat."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    Ws = tuple(rng.normal(0, np.sqrt(2 / a), (a, b)).astype(f32) for a, b in pairwise(sizes))
    acts = tuple(np.zeros((batch, u), f32) for u in sizes[1:])  # z of each layer
    grads = tuple(np.full((batch, u), 0.01, f32) for u in sizes[1:])  # dL/dz (any values)
    dWs = tuple(np.zeros_like(W) for W in Ws)
    start = time.perf_counter()
    for _ in range(epochs):
        _products_epoch(X, Ws, acts, grads, dWs, batch)
    return time.perf_counter() - start


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return f"{torch.__version__} ({torch.get_num_threads()} threads)"


def train_torch(X, y, Y, sizes, batch, epochs, lr, seed) -> float:
    """PyTorch's standard loop: nn.Sequential, CrossEntropyLoss, torch.optim.Adam."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes[:-1]):  # hidden layers
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = len(X)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def train_sklearn(X, y, Y, sizes, batch, epochs, lr, seed) -> float:
    """scikit-learn's MLPClassifier, one partial_fit (one shuffled epoch) per epoch."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="adam", alpha=0.0,
        batch_size=batch, learning_rate_init=lr, shuffle=True, random_state=seed,
    )  # fmt: skip
    classes = np.arange(sizes[-1])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            clf.partial_fit(X, y, classes=classes)
    return time.perf_counter() - start
