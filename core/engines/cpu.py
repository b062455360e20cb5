"""Fast CPU engine: a whole training epoch inside one compiled numba call.

Parameters, gradient and optimizer state are the flat vectors of ``core/network.py``; the
trainer's batch order and per-step learning rates go straight into
``_cpu_kernels.train_epoch``, which gathers, runs forward and backward (matrix products through
BLAS for big layers, loops of explicit machine vectors for small ones), applies L1/L2,
clipping and the optimizer update for every minibatch with no allocation per step. Float64
training matches the NumPy reference engine to rounding.

Dropout masks come from a counter-based generator in the kernel (SplitMix64 of a key and
an element counter), keyed at the start of every epoch from (engine seed, epoch number):
the same seed gives the same run, independently of other engines in the process, but the
masks differ from the NumPy engine's (another generator), so only dropout-free runs agree
weight for weight with the reference.

The first use per dtype compiles the kernel (a few seconds) and caches it on disk
(``cache=True``); later processes load it in a fraction of a second.
"""

from __future__ import annotations

import numpy as np

from .. import network as N
from ..config import (
    ACTIVATION_CODES,
    LOSS_CODES,
    OPTIMIZER_CODES,
    OptimizerConfig,
    RegularizationConfig,
)
from ..network import NetworkSpec
from . import _cpu_kernels as K
from .base import Engine, is_classifier


def _c(a: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """C-contiguous, writeable array of dtype: one compiled specialisation per dtype."""
    out = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


class CpuEngine(Engine):
    name = "cpu"

    def __init__(
        self,
        spec: NetworkSpec,
        params: np.ndarray,
        optimizer: OptimizerConfig,
        regularization: RegularizationConfig,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, params, optimizer, regularization, seed=seed)
        dt = self.dtype.type
        self.params = _c(np.array(params, copy=True), self.dtype)  # (P,) [W1, b1, W2, b2, ...]
        self.grad = np.zeros_like(self.params)
        self.m = np.zeros_like(self.params)  # first moment / velocity
        self.v = np.zeros_like(self.params)  # second moment
        self.t = np.zeros(1, np.int64)  # optimizer steps taken
        self.sizes = np.array([spec.n_in] + [layer.units for layer in spec.layers], np.int64)
        self.w_off = np.array([w for w, _, _ in spec.offsets], np.int64)
        self.acts = np.array([ACTIVATION_CODES[lay.activation] for lay in spec.layers], np.int64)
        # dropout on hidden layers only, as network.forward does
        drops = [layer.dropout for layer in spec.layers[:-1]] + [0.0]
        self.keep = np.array([1.0 - p for p in drops], np.float64)
        self.scale = np.array([dt(1.0) / dt(k) for k in self.keep], self.dtype)
        self.has_dropout = bool(np.any(self.keep < 1.0))
        self.loss_code = LOSS_CODES[spec.loss]
        self.opt_code = OPTIMIZER_CODES[optimizer.name]
        o, r = optimizer, regularization
        # 1 - beta rounded in the dtype, as optim.step computes it
        values = {
            "one": 1.0, "slope": spec.leaky_slope, "mu": o.momentum, "beta1": o.beta1,
            "one_minus_beta1": 1 - dt(o.beta1), "beta2": o.beta2,
            "one_minus_beta2": 1 - dt(o.beta2), "alpha": o.alpha,
            "one_minus_alpha": 1 - dt(o.alpha), "eps": o.eps, "weight_decay": o.weight_decay,
            "l1": r.l1, "l2": r.l2, "lr": 0.0, "step": 0.0, "inv_c2": 1.0,
            "scratch": 0.0,
        }  # fmt: skip
        self.hp = np.array([values[name] for name in K.HP_NAMES], self.dtype)
        self.clip = float(o.clip_norm) if o.clip_norm is not None else 0.0
        self.epochs_run = 0
        self.capacity = 0  # rows the workspace holds; grown to the largest batch seen

    def _workspace(self, batch: int) -> None:
        """Allocate the activation and gradient buffers once for ``batch`` rows."""
        if batch <= self.capacity:
            return
        units = self.sizes[1:]
        dt = self.dtype
        self.Xb = np.zeros(batch * self.sizes[0], dt)  # (batch, n_in) gathered inputs
        self.Tb = np.zeros(batch * units[-1], dt)  # (batch, n_out) gathered targets
        # per layer (batch, units): pre-activation, activation, dropout mask, masked activation
        self.Z, self.H, self.M, self.D = (np.zeros(batch * int(units.sum()), dt) for _ in range(4))
        # ping-pong (batch, units) gradients of the backward pass
        self.G1, self.G2 = (np.zeros(batch * int(self.sizes.max()), dt) for _ in range(2))
        # transposes of the small-product loops: a W.T, or the out.T of a narrow weight gradient
        self.S = np.zeros(int(np.max(self.sizes[:-1] * self.sizes[1:])), dt)
        self.unit_off = batch * np.concatenate([[0], np.cumsum(units[:-1])]).astype(np.int64)
        self.capacity = batch

    def set_train_data(self, X: np.ndarray, T: np.ndarray) -> None:
        self.X = _c(X, self.dtype)  # (n, n_in)
        self.T = _c(T, self.dtype)  # (n, n_out)

    def train_epoch(
        self, order: np.ndarray, lrs: np.ndarray, batch_size: int
    ) -> tuple[float, float]:
        order = _c(order, np.int64)
        lrs = _c(lrs, np.float64)
        n = len(order)
        if n == 0:
            return float("nan"), float("nan")
        if len(lrs) < -(-n // batch_size):
            raise ValueError(f"lrs: {len(lrs)} learning rates for {-(-n // batch_size)} steps")
        self._workspace(min(batch_size, n))
        seed = -1
        if self.has_dropout:  # a fresh stream per (engine seed, epoch): see the module doc
            seq = np.random.SeedSequence([self.seed, self.epochs_run])
            seed = int(seq.generate_state(1)[0])
        o = self.optimizer
        total, correct = K.train_epoch(
            self.params, self.grad, self.m, self.v, self.t,
            self.X, self.T, order, lrs, int(batch_size),
            self.sizes, self.w_off, self.unit_off, self.acts, self.keep, self.scale,
            self.loss_code, self.opt_code, self.hp,
            float(o.beta1), float(o.beta2), self.clip, seed,
            self.Xb, self.Tb, self.Z, self.H, self.M, self.D, self.G1, self.G2, self.S,
        )  # fmt: skip
        self.epochs_run += 1
        acc = correct / n if is_classifier(self.spec.loss, self.spec.n_out) else float("nan")
        return total / n, acc

    def evaluate(self, X: np.ndarray, T: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) through the compiled forward, in blocks of at least 256 rows."""
        n = len(X)
        if n == 0:
            return float("nan"), float("nan")
        self._workspace(min(max(self.capacity, 256), n))
        total, correct = K.evaluate(
            self.params, _c(X, self.dtype), _c(T, self.dtype), self.capacity, self.sizes,
            self.w_off, self.unit_off, self.acts, self.keep, self.scale, self.loss_code, self.hp,
            self.Z, self.H, self.G1,
        )  # fmt: skip
        acc = correct / n if is_classifier(self.spec.loss, self.spec.n_out) else float("nan")
        return total / n, acc

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        return N.predict_logits(self.params, self.spec, np.asarray(X, dtype=self.dtype))

    def get_params(self) -> np.ndarray:
        return self.params.copy()

    def set_params(self, params: np.ndarray) -> None:
        self.params[...] = params
