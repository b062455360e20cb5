"""CUDA kernels of the GPU engine (numba.cuda), built once per (dtype, tile, block).

Kernels are made by a cached factory so that the scalar type and the shared-memory shapes are
compile-time constants: a float32 net computes in float32 on the device (float literals would
otherwise promote to float64, which is up to 32x slower on consumer GPUs). The formulas are
those of core/functional.py and core/optim.py, written in the same order of operations so the
float64 results match the NumPy reference to rounding.

Kernel list (all 1D kernels use grid-stride loops, so any grid size is correct):
  gather          minibatch rows X[order[start:start+rows]], T[...] -> Xb, Tb
  forward/dx/dw   tiled matrix products with fused epilogues (see _cuda_matmul)
  softmax_rows    softmax as a hidden activation (+ dropout), one thread per row
  softmax_back    its Jacobian-vector product, in place
  loss_grad       fused softmax-CE / sigmoid-BCE / MSE: per-row loss, correct flag, dL/dlogits
  grad_sumsq      (gradient + L1/L2 term)^2 summed per block, for global-norm clipping
  update          L1/L2 term, clip scale, then sgd/momentum/nesterov/adam/adamw/rmsprop in place
  sum_rows        the epoch's loss and correct count, one block, deterministic order
Reductions are tree sums in shared memory written per block (no atomics), so results are the
same on every run: dropout reproducible by seed also means weights reproducible by seed.
"""

# max()/min() of floats do not compile on numba 0.68's built-in CUDA target: keep the
# conditional expressions ruff would turn into them.
# ruff: noqa: FURB136

from __future__ import annotations

import math
import warnings
from functools import cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda
from numba.core.errors import NumbaDeprecationWarning

with warnings.catch_warnings():  # under the simulator numba.cuda.random passes nopython=False
    warnings.simplefilter("ignore", NumbaDeprecationWarning)
    from numba.cuda.random import xoroshiro128p_uniform_float32, xoroshiro128p_uniform_float64

from ..config import ACTIVATION_CODES as ACT_CODES
from ..config import LOSS_CODES, OPTIMIZER_CODES
from ._cuda_matmul import build_matmuls

# activation and loss codes are runtime arguments (one branch, uniform across a warp)
_RELU, _LEAKY_RELU, _SIGMOID, _TANH = (ACT_CODES[k] for k in ("relu", "leaky_relu", "sigmoid", "tanh"))
_CROSS_ENTROPY, _BCE = LOSS_CODES["cross_entropy"], LOSS_CODES["bce"]
# hyper[]: per-run optimizer scalars in the engine's dtype, copied to the device once
HYPER = ("mu", "b1", "omb1", "b2", "omb2", "alpha", "oma", "eps", "l1", "l2")
# table[step, :]: per-step scalars, copied once per epoch
TABLE = ("lr", "lr_c1", "c2", "lr_wd")

_SGD, _MOMENTUM, _NESTEROV, _ADAM, _ADAMW, _RMSPROP = (
    OPTIMIZER_CODES[k] for k in ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
)


def kernel_signatures(dtype: str) -> dict[str, tuple]:
    """The argument types the engine launches each kernel with: C-contiguous device arrays,
    int64 sizes and offsets, scalars in the dtype (metrics and the clip norm in float64).

    Lets a kernel be compiled ahead for a GPU it cannot see (cuda.compile_ptx); the tests
    check that the engine's launches match these exactly.
    """
    from numba.cuda.random import xoroshiro128p_dtype

    ft, f64, i64 = numba.from_dtype(np.dtype(dtype)), numba.float64, numba.int64
    M, V, R = ft[:, ::1], ft[::1], f64[::1]  # matrices, flat vectors, float64 metric rows
    S = numba.from_dtype(xoroshiro128p_dtype)[::1]  # RNG states
    return {
        "gather": (M, M, i64[::1], i64, i64, M, M),
        "forward": (M, V, i64, i64, M, M, M, i64, ft, ft, ft, S),
        "dx": (M, V, i64, i64, M, M, i64, ft, i64, M),
        "dw": (M, M, i64, V, i64),
        "softmax_rows": (M, M, M, i64, ft, ft, S),
        "softmax_back": (M, M, i64),
        "loss_grad": (M, M, i64, i64, M, R, R, i64, i64),
        "grad_sumsq": (V, V, V, V, R),
        "update": (V, V, V, V, V, V, M, i64, i64, f64, R, i64),
        "sum_rows": (R, R, i64, R),
    }


@cache
def build_kernels(dtype: str, tile: int, block: int) -> SimpleNamespace:
    """All kernels for ``dtype`` (float32/float64), matmul ``tile`` and 1D ``block`` size.

    ``block`` must be a power of two (tree reductions); ``tile * tile`` threads per matmul block.
    """
    if block & (block - 1):
        raise ValueError(f"block: {block} is not a power of two")
    ft = numba.from_dtype(np.dtype(dtype))
    f64 = numba.float64
    zero, one, two = ft(0.0), ft(1.0), ft(2.0)
    uniform = (
        xoroshiro128p_uniform_float32 if dtype == "float32" else xoroshiro128p_uniform_float64
    )

    @cuda.jit(device=True)
    def sigmoid(z):
        e = math.exp(-abs(z))  # exp of a non-positive number: no overflow
        return one / (one + e) if z >= zero else e / (one + e)

    @cuda.jit(device=True)
    def act_forward(code, z, slope):
        if code == _RELU:
            return z if z > zero else zero
        if code == _LEAKY_RELU:
            return z if z > zero else z * slope
        if code == _SIGMOID:
            return sigmoid(z)
        if code == _TANH:
            return math.tanh(z)
        return z  # linear; softmax is applied by softmax_rows

    @cuda.jit(device=True)
    def act_backward(code, z, da, slope):
        # dL/dz from dL/da, with a = f(z) recomputed (cheaper than storing it)
        if code == _RELU:
            return da if z > zero else zero
        if code == _LEAKY_RELU:
            return da if z > zero else da * slope
        if code == _SIGMOID:
            a = sigmoid(z)
            return da * a * (one - a)
        if code == _TANH:
            a = math.tanh(z)
            return da * (one - a * a)
        return da  # linear; softmax_back finishes a softmax layer

    @cuda.jit(device=True)
    def row_max_expsum(Z, r):
        # (max of row r, sum of exp(z - max)): the stable softmax normaliser of one row
        zmax = Z[r, 0]
        for j in range(1, Z.shape[1]):
            zmax = Z[r, j] if Z[r, j] > zmax else zmax
        s = zero
        for j in range(Z.shape[1]):
            s += math.exp(Z[r, j] - zmax)
        return zmax, s

    @cuda.jit
    def gather(X, T, order, start, rows, Xb, Tb):
        # Xb (>= rows, n_in), Tb (>= rows, n_out) <- rows order[start : start + rows]
        n_in, n_out = X.shape[1], T.shape[1]
        width = n_in + n_out
        for e in range(cuda.grid(1), rows * width, cuda.gridsize(1)):
            r = e // width
            j = e - r * width
            src = order[start + r]
            if j < n_in:
                Xb[r, j] = X[src, j]
            else:
                Tb[r, j - n_in] = T[src, j - n_in]

    @cuda.jit
    def softmax_rows(Z, Out, M, rows, keep, inv_keep, states):
        # Out (>= rows, u) = softmax(Z) row by row, then inverted dropout
        u = Z.shape[1]
        tid = cuda.grid(1)
        for r in range(tid, rows, cuda.gridsize(1)):
            zmax, s = row_max_expsum(Z, r)
            for j in range(u):
                a = math.exp(Z[r, j] - zmax) / s
                if keep < one:
                    m = inv_keep if uniform(states, tid) < keep else zero
                    M[r, j] = m
                    a = a * m
                Out[r, j] = a

    @cuda.jit
    def softmax_back(Z, D, rows):
        # D (>= rows, u): dL/da (mask applied) -> dL/dz = a * (da - sum(da * a)), a = softmax(Z)
        u = Z.shape[1]
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            zmax, s = row_max_expsum(Z, r)
            dot = zero
            for j in range(u):
                dot += D[r, j] * (math.exp(Z[r, j] - zmax) / s)
            for j in range(u):
                a = math.exp(Z[r, j] - zmax) / s
                D[r, j] = a * (D[r, j] - dot)

    @cuda.jit
    def loss_grad(Z, T, rows, loss, G, row_loss, row_ok, pos, want_grad):
        # Z, T (>= rows, k) -> row_loss[pos + r] (float64), row_ok[pos + r], G = dL/dZ of the
        # batch mean (when want_grad); one thread per row
        k = Z.shape[1]
        nf = ft(rows)
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            zi, ti = 0, 0  # argmax of logits and of targets (first maximum, like np.argmax)
            for j in range(1, k):
                if Z[r, j] > Z[r, zi]:
                    zi = j
                if T[r, j] > T[r, ti]:
                    ti = j
            s = zero
            if loss == _CROSS_ENTROPY:  # softmax cross-entropy: logp = (z - max) - log(sum(exp(z - max)))
                zmax = Z[r, zi]
                se = zero
                for j in range(k):
                    se += math.exp(Z[r, j] - zmax)
                lse = math.log(se)
                for j in range(k):
                    lp = (Z[r, j] - zmax) - lse
                    s += T[r, j] * lp
                    if want_grad:
                        G[r, j] = (math.exp(lp) - T[r, j]) / nf
                s = -s
                ok = zi == ti
            elif loss == _BCE:  # sigmoid BCE: log(1 + exp(z)) - t z, never overflowing
                for j in range(k):
                    z, t = Z[r, j], T[r, j]
                    s += ((z if z > zero else zero) - z * t) + math.log1p(math.exp(-abs(z)))
                    if want_grad:
                        G[r, j] = (sigmoid(z) - t) / nf
                ok = (Z[r, 0] > zero) == (T[r, 0] > ft(0.5))
            else:  # mse: mean over the k outputs too
                kf = ft(k)
                for j in range(k):
                    d = Z[r, j] - T[r, j]
                    s += d * d
                    if want_grad:
                        G[r, j] = (two * d) / (nf * kf)
                s = s / kf
                ok = k > 1 and zi == ti
            row_loss[pos + r] = f64(s)
            row_ok[pos + r] = 1 if ok else 0

    @cuda.jit(device=True)
    def penalized(p, g, w, hyper):
        # g + (l1 sign(p) + l2 p) * w; w is 1 on weights, 0 on biases
        sgn = one if p > zero else (-one if p < zero else zero)
        return g + (hyper[8] * sgn + hyper[9] * p) * w

    @cuda.jit
    def grad_sumsq(grad, P, wmask, hyper, partial):
        # partial[block] = sum over this block's elements of (g + penalty)^2, in float64
        sm = cuda.shared.array(block, numba.float64)
        t = cuda.threadIdx.x
        acc = 0.0
        for i in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
            g = f64(penalized(P[i], grad[i], wmask[i], hyper))
            acc += g * g
        sm[t] = acc
        cuda.syncthreads()
        half = block // 2
        while half > 0:
            if t < half:
                sm[t] += sm[t + half]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            partial[cuda.blockIdx.x] = sm[0]

    @cuda.jit
    def update(P, grad, m, v, wmask, hyper, table, step, code, clip, partial, n_partial):
        # P, grad, m, v, wmask (n_params,); table[step] = (lr, lr / c1, c2, lr * wd)
        scale = cuda.shared.array(1, ft)
        if clip > 0.0:
            if cuda.threadIdx.x == 0:
                total = 0.0
                for b in range(n_partial):  # fixed order: deterministic
                    total += partial[b]
                norm = math.sqrt(total)
                scale[0] = ft(clip / norm) if norm > clip else one
            cuda.syncthreads()
        lr = table[step, 0]
        for i in range(cuda.grid(1), P.size, cuda.gridsize(1)):
            p, w = P[i], wmask[i]
            g = penalized(p, grad[i], w, hyper)
            if clip > 0.0:
                g = g * scale[0]
            if code == _SGD:
                p = p - lr * g
            elif code == _MOMENTUM or code == _NESTEROV:
                mi = m[i] * hyper[0] + g
                m[i] = mi
                p = p - lr * (g + hyper[0] * mi if code == _NESTEROV else mi)
            elif code == _ADAM or code == _ADAMW:
                if code == _ADAMW:
                    p = p - table[step, 3] * p * w  # decoupled decay, weights only
                mi = m[i] * hyper[1] + hyper[2] * g
                vi = v[i] * hyper[3] + hyper[4] * g * g
                m[i], v[i] = mi, vi
                p = p - table[step, 1] * mi / (math.sqrt(vi / table[step, 2]) + hyper[7])
            else:  # rmsprop
                vi = v[i] * hyper[5] + hyper[6] * g * g
                v[i] = vi
                p = p - lr * g / (math.sqrt(vi) + hyper[7])
            P[i] = p

    @cuda.jit
    def sum_rows(row_loss, row_ok, n, out):
        # one block: out[0] = sum(row_loss[:n]), out[1] = sum(row_ok[:n]), fixed order
        sl = cuda.shared.array(block, numba.float64)
        sc = cuda.shared.array(block, numba.float64)
        t = cuda.threadIdx.x
        a, c = 0.0, 0.0
        for i in range(t, n, block):
            a += row_loss[i]
            c += row_ok[i]
        sl[t], sc[t] = a, c
        cuda.syncthreads()
        half = block // 2
        while half > 0:
            if t < half:
                sl[t] += sl[t + half]
                sc[t] += sc[t + half]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            out[0], out[1] = sl[0], sc[0]

    mm = build_matmuls(ft, tile, act_forward, act_backward, uniform)
    return SimpleNamespace(
        dtype=dtype, tile=tile, block=block,
        act_forward=act_forward, act_backward=act_backward,
        gather=gather, softmax_rows=softmax_rows, softmax_back=softmax_back,
        loss_grad=loss_grad, grad_sumsq=grad_sumsq, update=update, sum_rows=sum_rows,
        forward=mm.forward, dx=mm.dx, dw=mm.dw,
    )  # fmt: skip
