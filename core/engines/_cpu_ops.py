"""Compiled building blocks of the fast CPU engine: matrix products, activations, losses.

Every function is a module-level ``numba.njit(cache=True)`` function working in place on
preallocated arrays (no allocation), so the epoch kernel in ``_cpu_kernels.py`` can call them
and still load from the on-disk cache. The formulas are those of ``core/functional.py``;
activations and losses are picked by small integer codes derived from the config tuples.
Scalars that must carry the array's dtype (1, the leaky slope) come in as array elements,
since numba would promote ``float32 * python float`` to float64. ``error_model="numpy"``
everywhere: a division by zero gives inf/NaN as in NumPy instead of a per-element check
that would also stop the loops from vectorising (Adam's update ran 9x slower with it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import ACTIVATIONS, LOSSES

_ACT = {name: i for i, name in enumerate(ACTIVATIONS)}
_LOSS = {name: i for i, name in enumerate(LOSSES)}
RELU, LEAKY_RELU, SIGMOID = _ACT["relu"], _ACT["leaky_relu"], _ACT["sigmoid"]
TANH, LINEAR, SOFTMAX = _ACT["tanh"], _ACT["linear"], _ACT["softmax"]
CROSS_ENTROPY, BCE, MSE = _LOSS["cross_entropy"], _LOSS["bce"], _LOSS["mse"]

# Below this many multiply-adds a product runs as plain loops: BLAS call and packing
# overhead (~1 us) dominate tiny layers such as 32 x 16 x 16.
BLAS_MIN_FMAS = 32 * 64 * 64

# ---------------------------------------------------------------- matrix products
# Small products run as loops ordered so that consecutive updates hit different outputs (no
# store-to-load chain) and the innermost loop runs along the longer output dimension.


@njit(cache=True, error_model="numpy")
def acc_nn(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """out (m, n) += A (m, k) @ B (k, n) as loops, one rank-1 update per p."""
    m, k = A.shape
    n = B.shape[1]
    for p in range(k):
        for i in range(m):
            a = A[i, p]
            for j in range(n):
                out[i, j] += a * B[p, j]


@njit(cache=True, error_model="numpy")
def add_bias(z: np.ndarray, b: np.ndarray) -> None:
    for s in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[s, j] += b[j]


@njit(cache=True, error_model="numpy")
def dense_forward(A: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (m, n) = A (m, k) @ W (k, n) + b (n,)."""
    m, k = A.shape
    n = W.shape[1]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A, W, out)
        add_bias(out, b)
        return
    for i in range(m):
        out[i, :] = b
    acc_nn(A, W, out)


@njit(cache=True, error_model="numpy")
def mm_tn(A: np.ndarray, B: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """out (k, n) = A.T @ B for A (m, k), B (m, n): the weight gradient a_prev.T @ dz.
    scratch holds >= k * n elements."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A.T, B, out)
        return
    if n >= k:
        out[:, :] = 0.0
        for s in range(m):
            for i in range(k):
                a = A[s, i]
                for j in range(n):
                    out[i, j] += a * B[s, j]
        return
    out_t = scratch[: n * k].reshape(n, k)  # narrow output: accumulate out.T, rows of k
    out_t[:, :] = 0.0
    for s in range(m):
        for j in range(n):
            b = B[s, j]
            for i in range(k):
                out_t[j, i] += b * A[s, i]
    for i in range(k):
        for j in range(n):
            out[i, j] = out_t[j, i]


@njit(cache=True, error_model="numpy")
def mm_nt(A: np.ndarray, B: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """out (m, k) = A @ B.T for A (m, n), B (k, n): the input gradient dz @ W.T.
    scratch holds >= k * n elements."""
    m, n = A.shape
    k = B.shape[0]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A, B.T, out)
        return
    B_t = scratch[: n * k].reshape(n, k)  # (n, k): W.T made contiguous, cheaper than strides
    for i in range(k):
        for j in range(n):
            B_t[j, i] = B[i, j]
    out[:, :] = 0.0
    acc_nn(A, B_t, out)


@njit(cache=True, error_model="numpy")
def column_sums(dz: np.ndarray, db: np.ndarray) -> None:
    db[:] = 0.0
    for s in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[s, j]


# ---------------------------------------------------------------- activations


@njit(cache=True, error_model="numpy")
def activate(code: int, z: np.ndarray, h: np.ndarray, one: float, slope: float) -> None:
    """h = f(z) for z, h (batch, units); one and slope carry the array dtype."""
    zero = one - one
    m, n = z.shape
    if code == SOFTMAX:
        for s in range(m):
            mx = z[s, 0]
            for j in range(1, n):
                mx = max(mx, z[s, j])
            total = zero
            for j in range(n):
                h[s, j] = np.exp(z[s, j] - mx)
                total += h[s, j]
            for j in range(n):
                h[s, j] /= total
        return
    for s in range(m):
        for j in range(n):
            x = z[s, j]
            if code == RELU:
                h[s, j] = zero if x <= zero else x  # noqa: FURB136 (max() would turn NaN into 0)
            elif code == LEAKY_RELU:
                h[s, j] = x if x > zero else x * slope
            elif code == SIGMOID:  # exp of a non-positive number only
                e = np.exp(-abs(x))
                h[s, j] = one / (one + e) if x >= zero else e / (one + e)
            elif code == TANH:
                h[s, j] = np.tanh(x)
            else:  # linear
                h[s, j] = x


@njit(cache=True, error_model="numpy")
def activation_backward(
    code: int, z: np.ndarray, h: np.ndarray, da: np.ndarray, one: float, slope: float
) -> None:
    """da (batch, units) becomes dL/dz in place, given z and h = f(z) (no dropout mask)."""
    zero = one - one
    m, n = z.shape
    if code == SOFTMAX:  # Jacobian-vector product, row by row
        for s in range(m):
            dot = zero
            for j in range(n):
                dot += da[s, j] * h[s, j]
            for j in range(n):
                da[s, j] = h[s, j] * (da[s, j] - dot)
        return
    for s in range(m):
        for j in range(n):
            if code == RELU:  # da * 0 rather than 0 keeps NaN/inf as the reference does
                da[s, j] = da[s, j] if z[s, j] > zero else da[s, j] * zero
            elif code == LEAKY_RELU:
                da[s, j] = da[s, j] if z[s, j] > zero else da[s, j] * slope
            elif code == SIGMOID:
                da[s, j] = da[s, j] * h[s, j] * (one - h[s, j])
            elif code == TANH:
                da[s, j] = da[s, j] * (one - h[s, j] * h[s, j])


@njit(cache=True, error_model="numpy")
def dropout(h: np.ndarray, mask: np.ndarray, out: np.ndarray, keep: float, scale: float) -> None:
    """Inverted dropout: mask = (u < keep) / keep with numba's generator; out = h * mask."""
    zero = scale - scale
    for s in range(h.shape[0]):
        for j in range(h.shape[1]):
            mask[s, j] = scale if np.random.random() < keep else zero
            out[s, j] = h[s, j] * mask[s, j]


# ---------------------------------------------------------------- losses on logits


@njit(cache=True, error_model="numpy")
def argmax_row(a: np.ndarray, s: int) -> int:
    best = 0
    for j in range(1, a.shape[1]):
        if a[s, j] > a[s, best]:
            best = j
    return best


@njit(cache=True, error_model="numpy")
def loss_and_grad(
    code: int, z: np.ndarray, T: np.ndarray, g: np.ndarray, one: float
) -> tuple[float, int]:
    """Fill g (n, k) with dL/dz of the mean loss; return (sum of per-sample losses in float64,
    correctly classified rows). Same formulas as functional.loss_and_grad and n_correct."""
    zero = one - one
    n, k = z.shape
    total = 0.0
    correct = 0
    if code == CROSS_ENTROPY:
        for s in range(n):
            mx = z[s, 0]
            for j in range(1, k):
                mx = max(mx, z[s, j])
            se = zero
            for j in range(k):
                g[s, j] = np.exp(z[s, j] - mx)  # (k,) unnormalised probabilities
                se += g[s, j]
            lse = np.log(se)
            row = zero
            for j in range(k):
                row += T[s, j] * (z[s, j] - mx - lse)  # T * log p
                g[s, j] = (g[s, j] / se - T[s, j]) / n
            total -= row
            if argmax_row(z, s) == argmax_row(T, s):
                correct += 1
    elif code == BCE:
        for s in range(n):
            for j in range(k):
                x = z[s, j]
                e = np.exp(-abs(x))
                total += max(x, zero) - x * T[s, j] + np.log1p(e)
                p = one / (one + e) if x >= zero else e / (one + e)
                g[s, j] = (p - T[s, j]) / n
            if (z[s, 0] > zero) == (T[s, 0] > 0.5):
                correct += 1
    else:  # mse, mean over all n * k entries
        for s in range(n):
            for j in range(k):
                diff = z[s, j] - T[s, j]
                total += diff * diff
                g[s, j] = 2 * diff / (n * k)
            if k > 1 and argmax_row(z, s) == argmax_row(T, s):
                correct += 1
        total /= k
    return total, correct
