"""GPU engine: the whole training loop on the device, written with numba.cuda kernels.

Parameters, gradient, optimizer state and the training split are device arrays for the whole
run. Per step the host only launches kernels (gather, forward, loss, backward, clip, update)
and never waits for the device; per epoch it copies the batch order and a small table of
per-step scalars in (learning rate, Adam's bias corrections) and two numbers out (loss sum,
correct count). Kernels: core/engines/_cuda_kernels.py and _cuda_matmul.py.

Device: the ``device`` argument (``engine.device`` in the config), else the environment
variable NNSWEEP_CUDA_DEVICE, else 0. The search's ``--jobs N`` workers set
NNSWEEP_CUDA_DEVICE=i % n_gpus, so on a multi-GPU machine each worker trains on its own GPU.

numba.cuda: the code uses only the ``numba.cuda`` API, which is both Numba's built-in CUDA
target (deprecated upstream but working with numba 0.68) and NVIDIA's ``numba-cuda`` package,
which installs itself under the same import name. On a GPU machine
``pip install "numba-cuda[cu12]"`` (or ``[cu13]``) gives the maintained target and newer CUDA
toolkits; nothing here changes.

Simulator: with NUMBA_ENABLE_CUDASIM=1 (set by tests/conftest.py) the same kernels run in
Numba's CUDA simulator, one Python thread per CUDA thread. Launches then use
``Launch.simulator()`` (4x4 tiles, 8-thread blocks, one block per grid): every kernel uses
grid-stride loops, so only the speed depends on the launch sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..config import OPTIMIZER_CODES, ConfigError, OptimizerConfig, RegularizationConfig
from ..network import NetworkSpec
from ._cuda_kernels import ACT_CODES, LOSS_CODES, build_kernels
from . import cuda_simulated
from .base import Engine, is_classifier, n_batches

DEVICE_ENV = "NNSWEEP_CUDA_DEVICE"


@dataclass(frozen=True)
class Launch:
    """Launch sizes. The kernels are correct for any of them (grid-stride loops)."""

    tile: int = 16  # matmul blocks are tile x tile threads; 16 x 16 = 256
    block: int = 256  # threads per 1D block; a power of two (tree reductions)
    max_blocks: int = 1024  # grid cap of 1D kernels
    max_tiles: int = 64  # grid cap of matmul kernels per dimension (bounds the RNG states)
    red_blocks: int = 64  # blocks (partial sums) of the gradient-norm reduction
    chunk: int = 8192  # rows per forward pass in predict_logits / evaluate

    @classmethod
    def simulator(cls) -> Launch:
        # the simulator costs ~0.3 ms per thread per launch: few threads, longer loops
        return cls(tile=4, block=8, max_blocks=1, max_tiles=1, red_blocks=1, chunk=8192)


def resolve_device(device: int | None) -> int:
    """The GPU index: ``device``, else $NNSWEEP_CUDA_DEVICE, else 0; checked against the GPUs."""
    field = "engine.device"
    if device is None:
        text = os.environ.get(DEVICE_ENV, "").strip()
        field = DEVICE_ENV
        try:
            device = int(text) if text else 0
        except ValueError:
            raise ConfigError(
                f"{DEVICE_ENV}: expected a device index 0, 1, ...; got {text!r}"
            ) from None
    n = len(cuda.gpus)
    if not 0 <= device < n:
        raise ConfigError(
            f"{field}: {device} is out of range; this machine has {n} CUDA device(s): 0..{n - 1}"
        )
    return device


@dataclass(frozen=True)
class _Layer:
    w_off: int  # offset of W in the flat vector; b follows at w_off + n_in * n_out
    n_in: int
    n_out: int
    act: int  # ACT_CODES; the output layer is linear (its activation is fused into the loss)
    keep: float  # 1 - dropout while training; 1.0 means no dropout


class _Buffers:
    """Per-layer device activations for up to ``cap`` rows."""

    def __init__(self, layers: list[_Layer], cap: int, dtype: np.dtype, train: bool) -> None:
        self.cap = cap
        dummy = cuda.device_array((1, 1), dtype)
        self.Z = [cuda.device_array((cap, ly.n_out), dtype) for ly in layers]  # pre-activations
        # layer outputs after dropout; the output layer's are its logits Z
        self.A = [cuda.device_array((cap, ly.n_out), dtype) for ly in layers[:-1]] + [self.Z[-1]]
        if train:
            self.Xb = cuda.device_array((cap, layers[0].n_in), dtype)
            self.Tb = cuda.device_array((cap, layers[-1].n_out), dtype)
            self.M = [
                cuda.device_array((cap, ly.n_out), dtype) if ly.keep < 1 else dummy
                for ly in layers
            ]
            self.D = [cuda.device_array((cap, ly.n_out), dtype) for ly in layers]  # dL/dZ
        else:
            self.M = [dummy] * len(layers)


class CudaEngine(Engine):
    name = "cuda"

    def __init__(
        self,
        spec: NetworkSpec,
        params: np.ndarray,
        optimizer: OptimizerConfig,
        regularization: RegularizationConfig,
        *,
        seed: int = 0,
        device: int | None = None,
        launch: Launch | None = None,
    ) -> None:
        super().__init__(spec, params, optimizer, regularization, seed=seed)
        self.device = resolve_device(device)
        cuda.select_device(self.device)
        self.launch = launch or (Launch.simulator() if cuda_simulated() else Launch())
        self.k = build_kernels(self.dtype.name, self.launch.tile, self.launch.block)
        dt = self.dtype.type
        n = spec.n_params
        self.P = cuda.to_device(np.ascontiguousarray(params, dtype=self.dtype))
        self.grad = cuda.device_array(n, self.dtype)
        self.m = cuda.to_device(np.zeros(n, self.dtype))  # first moment / velocity
        self.v = cuda.to_device(np.zeros(n, self.dtype))  # second moment
        self.wmask = cuda.to_device(spec.weight_mask().astype(self.dtype))
        o, reg = optimizer, regularization
        b1, b2, alpha = dt(o.beta1), dt(o.beta2), dt(o.alpha)
        # same roundings as core/optim.py: (1 - b1) etc. are formed in the dtype
        hyper = [
            dt(o.momentum),
            b1,
            1 - b1,
            b2,
            1 - b2,
            alpha,
            1 - alpha,
            dt(o.eps),
            dt(reg.l1),
            dt(reg.l2),
        ]
        self.hyper = cuda.to_device(np.array(hyper, dtype=self.dtype))
        self.code = OPTIMIZER_CODES[o.name]
        self.clip = float(o.clip_norm) if o.clip_norm is not None else 0.0
        self.slope = dt(spec.leaky_slope)
        self.loss_code = LOSS_CODES[spec.loss]
        self.layers = []
        for i, ((w, _, _), (n_in, n_out), ly) in enumerate(
            zip(spec.offsets, spec.shapes, spec.layers)
        ):
            last = i == len(spec.layers) - 1
            act = ACT_CODES["linear" if last else ly.activation]
            self.layers.append(_Layer(w, n_in, n_out, act, 1.0 if last else 1.0 - ly.dropout))
        self.t = 0  # optimizer steps taken (Adam's bias correction)
        self.partial = cuda.device_array(self.launch.red_blocks, np.float64)
        self.stats = cuda.device_array(2, np.float64)
        self.states = self.placeholder = None
        self.train_buf: _Buffers | None = None
        self.eval_buf: _Buffers | None = None
        self.row_bufs = (cuda.device_array(0, np.float64), cuda.device_array(0, np.float64))

    # ------------------------------------------------------------------ launch sizes

    def _grid1(self, n: int) -> int:
        return max(1, min(-(-n // self.launch.block), self.launch.max_blocks))

    def _grid2(self, rows: int, cols: int) -> tuple[int, int]:
        t, cap = self.launch.tile, self.launch.max_tiles
        return (max(1, min(-(-cols // t), cap)), max(1, min(-(-rows // t), cap)))

    def _n_states(self, rows: int) -> int:
        """RNG states for the largest dropout launch over ``rows`` rows: one per thread."""
        need = 1
        for ly in self.layers:
            if ly.keep < 1:
                if ly.act == ACT_CODES["softmax"]:
                    need = max(need, self._grid1(rows) * self.launch.block)
                else:
                    gx, gy = self._grid2(rows, ly.n_out)
                    need = max(need, gx * gy * self.launch.tile**2)
        return need

    # ------------------------------------------------------------------ data and buffers

    def set_train_data(self, X: np.ndarray, T: np.ndarray) -> None:
        if X.shape[1] != self.spec.n_in or T.shape[1] != self.spec.n_out or len(X) != len(T):
            raise ValueError(
                f"set_train_data: expected X (n, {self.spec.n_in}), T (n, {self.spec.n_out}); got {X.shape}, {T.shape}"
            )
        self.X = cuda.to_device(np.ascontiguousarray(X, dtype=self.dtype))
        self.T = cuda.to_device(np.ascontiguousarray(T, dtype=self.dtype))

    def _train_buffers(self, cap: int) -> _Buffers:
        if self.train_buf is None or self.train_buf.cap < cap:
            self.train_buf = _Buffers(self.layers, cap, self.dtype, train=True)
            n_states = self._n_states(cap)
            if any(ly.keep < 1 for ly in self.layers) and (
                self.states is None or self.states.size < n_states
            ):
                # xoroshiro128p streams from the seed, created once per run (again only if a
                # larger batch needs more threads)
                from numba.cuda.random import create_xoroshiro128p_states

                self.states = create_xoroshiro128p_states(n_states, seed=self.seed)
        return self.train_buf

    def _row_buffers(self, n: int) -> tuple:
        if self.row_bufs[0].size < n:
            self.row_bufs = (cuda.device_array(n, np.float64), cuda.device_array(n, np.float64))
        return self.row_bufs

    def _states(self):
        """The dropout RNG states, or a placeholder that is never drawn from (no dropout yet)."""
        if self.states is not None:
            return self.states
        if self.placeholder is None:
            from numba.cuda.random import xoroshiro128p_dtype

            self.placeholder = cuda.device_array(1, dtype=xoroshiro128p_dtype)
        return self.placeholder

    # ------------------------------------------------------------------ passes

    def _forward(self, buf: _Buffers, X, rows: int, train: bool) -> None:
        """Logits of ``rows`` rows of X into buf.Z[-1]; dropout only while training."""
        k, tile, block = self.k, self.launch.tile, self.launch.block
        states, dt = self._states(), self.dtype.type
        a = X
        for i, ly in enumerate(self.layers):
            keep = dt(ly.keep if train else 1.0)
            inv_keep = dt(1) / keep
            softmax = ly.act == ACT_CODES["softmax"]
            k.forward[self._grid2(rows, ly.n_out), (tile, tile)](
                a, self.P, ly.w_off, rows, buf.Z[i], buf.A[i], buf.M[i], ly.act, self.slope,
                dt(1) if softmax else keep, inv_keep, states,
            )  # fmt: skip
            if softmax:
                k.softmax_rows[self._grid1(rows), block](
                    buf.Z[i], buf.A[i], buf.M[i], rows, keep, inv_keep, states
                )
            a = buf.A[i]

    def _step(
        self, buf: _Buffers, order, start: int, rows: int, table, s: int, row_loss, row_ok
    ) -> None:
        k, tile, block = self.k, self.launch.tile, self.launch.block
        n_in, n_out = self.spec.n_in, self.spec.n_out
        k.gather[self._grid1(rows * (n_in + n_out)), block](
            self.X, self.T, order, start, rows, buf.Xb, buf.Tb
        )
        self._forward(buf, buf.Xb, rows, train=True)
        k.loss_grad[self._grid1(rows), block](
            buf.Z[-1], buf.Tb, rows, self.loss_code, buf.D[-1], row_loss, row_ok, start, 1
        )
        for i in range(len(self.layers) - 1, -1, -1):
            ly = self.layers[i]
            a_prev = buf.Xb if i == 0 else buf.A[i - 1]
            k.dw[self._grid2(ly.n_in + 1, ly.n_out), (tile, tile)](
                a_prev, buf.D[i], rows, self.grad, ly.w_off
            )
            if i == 0:
                break
            prev = self.layers[i - 1]
            k.dx[self._grid2(rows, ly.n_in), (tile, tile)](
                buf.D[i], self.P, ly.w_off, rows, buf.Z[i - 1], buf.M[i - 1], prev.act, self.slope,
                1 if prev.keep < 1 else 0, buf.D[i - 1],
            )  # fmt: skip
            if prev.act == ACT_CODES["softmax"]:
                k.softmax_back[self._grid1(rows), block](buf.Z[i - 1], buf.D[i - 1], rows)
        n_partial = self.launch.red_blocks
        if self.clip > 0:
            k.grad_sumsq[n_partial, block](self.grad, self.P, self.wmask, self.hyper, self.partial)
        k.update[self._grid1(self.spec.n_params), block](
            self.P, self.grad, self.m, self.v, self.wmask, self.hyper, table, s, self.code,
            self.clip, self.partial, n_partial,
        )  # fmt: skip

    def step_table(self, lrs: np.ndarray) -> np.ndarray:
        """(steps, 4) per-step scalars (lr, lr / c1, c2, lr * wd) in the dtype, as core/optim.py forms them."""
        o, dt = self.optimizer, self.dtype.type
        table = np.empty((len(lrs), 4), dtype=self.dtype)
        for i, lr in enumerate(lrs):
            t = self.t + i + 1
            c1, c2 = 1.0 - o.beta1**t, 1.0 - o.beta2**t
            table[i] = (dt(lr), dt(lr / c1), dt(c2), dt(lr) * dt(o.weight_decay))
        return table

    def _sums(self, row_loss, row_ok, n: int) -> tuple[float, float]:
        self.k.sum_rows[1, self.launch.block](row_loss, row_ok, n, self.stats)
        total, correct = self.stats.copy_to_host()
        return float(total), float(correct)

    # ------------------------------------------------------------------ Engine API

    def train_epoch(
        self, order: np.ndarray, lrs: np.ndarray, batch_size: int
    ) -> tuple[float, float]:
        n = len(order)
        if n == 0:
            return float("nan"), float("nan")
        steps = n_batches(n, batch_size)
        if len(lrs) < steps:
            raise ValueError(
                f"train_epoch: {steps} steps need {steps} learning rates, got {len(lrs)}"
            )
        buf = self._train_buffers(min(batch_size, n))
        order_d = cuda.to_device(np.ascontiguousarray(order, dtype=np.int64))  # once per epoch
        table = cuda.to_device(self.step_table(np.asarray(lrs[:steps], dtype=np.float64)))
        row_loss, row_ok = self._row_buffers(n)
        for s in range(steps):
            start = s * batch_size
            self._step(buf, order_d, start, min(batch_size, n - start), table, s, row_loss, row_ok)
        self.t += steps
        total, correct = self._sums(row_loss, row_ok, n)
        acc = correct / n if is_classifier(self.spec.loss, self.spec.n_out) else float("nan")
        return total / n, acc

    def _chunks(self, X: np.ndarray):
        """Forward passes over X in chunks: yields (start, rows, device logits buffer)."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        chunk = min(self.launch.chunk, len(X))
        if self.eval_buf is None or self.eval_buf.cap < chunk:
            self.eval_buf = _Buffers(self.layers, chunk, self.dtype, train=False)
        for start in range(0, len(X), chunk):
            rows = min(chunk, len(X) - start)
            self._forward(
                self.eval_buf, cuda.to_device(X[start : start + rows]), rows, train=False
            )
            yield start, rows, self.eval_buf.Z[-1]

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((len(X), self.spec.n_out), dtype=self.dtype)
        for start, rows, Z in self._chunks(X):
            out[start : start + rows] = Z[:rows].copy_to_host()
        return out

    def evaluate(self, X: np.ndarray, T: np.ndarray) -> tuple[float, float]:
        n = len(X)
        if n == 0:
            return float("nan"), float("nan")
        T = np.ascontiguousarray(T, dtype=self.dtype)
        row_loss, row_ok = cuda.device_array(n, np.float64), cuda.device_array(n, np.float64)
        for start, rows, Z in self._chunks(X):
            Td = cuda.to_device(T[start : start + rows])
            # want_grad=0: the gradient argument (Z) is not written
            self.k.loss_grad[self._grid1(rows), self.launch.block](
                Z, Td, rows, self.loss_code, Z, row_loss, row_ok, start, 0
            )
        total, correct = self._sums(row_loss, row_ok, n)
        acc = correct / n if is_classifier(self.spec.loss, T.shape[1]) else float("nan")
        return total / n, acc

    def get_params(self) -> np.ndarray:
        return self.P.copy_to_host()

    def set_params(self, params: np.ndarray) -> None:
        if np.shape(params) != (self.spec.n_params,):
            raise ValueError(
                f"set_params: expected ({self.spec.n_params},), got {np.shape(params)}"
            )
        self.P.copy_to_device(np.ascontiguousarray(params, dtype=self.dtype))

    def close(self) -> None:
        """Drop the device arrays so the memory returns to the pool."""
        self.X = self.T = self.train_buf = self.eval_buf = self.states = self.placeholder = None
