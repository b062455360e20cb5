"""Reference engine: plain NumPy, one Python iteration per minibatch.

Slow for tiny nets (Python overhead per step) but short and obviously right; the other
engines are tested against it.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import network as N
from ..optim import OptimizerState, clip_by_global_norm, step
from .base import Engine, is_classifier


class NumpyEngine(Engine):
    name = "numpy"

    def __init__(self, spec, params, optimizer, regularization, *, seed=0) -> None:
        super().__init__(spec, params, optimizer, regularization, seed=seed)
        self.params = np.array(params, copy=True)
        self.state = OptimizerState.zeros(spec.n_params, self.dtype)
        self.mask = spec.weight_mask()
        self.fmask = self.mask.astype(self.dtype)
        self.rng = np.random.default_rng(seed)

    def set_train_data(self, X: np.ndarray, T: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X, dtype=self.dtype)
        self.T = np.ascontiguousarray(T, dtype=self.dtype)

    def train_epoch(self, order, lrs, batch_size):
        # a diverging run overflows: the trainer sees the non-finite loss and stops it
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._train_epoch(order, lrs, batch_size)

    def _train_epoch(self, order, lrs, batch_size):
        reg = self.regularization
        total_loss, correct, seen = 0.0, 0, 0
        for i, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start : start + batch_size]
            X, T = self.X[idx], self.T[idx]
            logits, cache = N.forward(self.params, self.spec, X, train=True, rng=self.rng)
            loss, dlogits = F.loss_and_grad(self.spec.loss, logits, T)
            g = N.backward(self.params, self.spec, cache, dlogits)
            if reg.l1 or reg.l2:
                g += F.penalty_grad(self.params, self.fmask, reg.l1, reg.l2).astype(self.dtype)
            g = clip_by_global_norm(g, self.optimizer.clip_norm)
            step(self.params, g, self.state, float(lrs[i]), self.optimizer, self.fmask)
            total_loss += loss * len(idx)
            correct += F.n_correct(self.spec.loss, logits, T)
            seen += len(idx)
        acc = correct / seen if is_classifier(self.spec.loss, self.spec.n_out) else float("nan")
        return total_loss / seen, acc

    def predict_logits(self, X):
        with np.errstate(over="ignore", invalid="ignore"):
            return N.predict_logits(self.params, self.spec, np.asarray(X, dtype=self.dtype))

    def get_params(self):
        return self.params.copy()

    def set_params(self, params):
        self.params[...] = params
