"""The fused training epoch of the CPU engine: one compiled call per epoch.

``train_epoch`` runs every minibatch of an epoch (gather by index, forward, fused loss
gradient, backward, L1/L2 term, global-norm clipping, optimizer update, inverted dropout)
without returning to Python and without allocating: parameters, gradient and optimizer state
are the flat vectors of ``core/network.py``; activations live in preallocated 1-D workspaces
that are reshaped into (batch, units) views. The formulas and the order of operations are
those of ``core/functional.py``, ``NumpyEngine.train_epoch`` and ``core/optim.step``, so
float64 results match the reference to rounding.

All compiled code lives in this one file on purpose: numba's on-disk cache of a function is
invalidated only when the function's own file changes, so a kernel calling helpers from
another module would silently keep stale copies of them after an edit: hence one file past
STYLE.md's ~400 lines rather than several. Only module-level njit functions are used (a
jitted closure would miss the cache). Activations, losses and optimizers are picked by small
integer codes derived from the config tuples. Scalars that must carry the array's dtype (1,
the leaky slope, the update's constants) come in as elements of a dtype array, since numba
would promote ``float32 * python float`` to float64.
``error_model="numpy"`` everywhere: a division by zero gives inf/NaN as in NumPy instead of a
per-element check that would also stop the loops from vectorising (Adam ran 9x slower).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import ACTIVATION_CODES, LOSS_CODES, OPTIMIZER_CODES

_ACT, _LOSS = ACTIVATION_CODES, LOSS_CODES
RELU, LEAKY_RELU, SIGMOID = _ACT["relu"], _ACT["leaky_relu"], _ACT["sigmoid"]
TANH, LINEAR, SOFTMAX = _ACT["tanh"], _ACT["linear"], _ACT["softmax"]
CROSS_ENTROPY, BCE, MSE = _LOSS["cross_entropy"], _LOSS["bce"], _LOSS["mse"]

# Below this many multiply-adds a product runs as plain loops: BLAS call and packing
# overhead (~1 us) dominate tiny layers such as 32 x 16 x 16.
BLAS_MIN_FMAS = 32 * 64 * 64

# ---------------------------------------------------------------- matrix products
# Small products run as loops whose innermost loop runs along the longer output dimension.


@njit(cache=True, error_model="numpy")
def fill(a: np.ndarray, value: float) -> None:
    """a[...] = value for a 2-D array (explicit loops: cheaper than slice assignment here)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] = value


@njit(cache=True, error_model="numpy")
def acc_nn(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """out (m, n) += A (m, k) @ B (k, n) as loops: rank-4 updates of each output row (four
    terms per load and store of out), or down the columns when rows are too short to
    vectorise. A may be a transposed (F-ordered) view."""
    m, k = A.shape
    n = B.shape[1]
    if n < 8:
        for p in range(k):
            for j in range(n):
                b = B[p, j]
                for i in range(m):
                    out[i, j] += A[i, p] * b
        return
    k4 = k - k % 4
    for p in range(0, k4, 4):
        for i in range(m):
            a0, a1, a2, a3 = A[i, p], A[i, p + 1], A[i, p + 2], A[i, p + 3]
            for j in range(n):
                out[i, j] += (a0 * B[p, j] + a1 * B[p + 1, j]) + (
                    a2 * B[p + 2, j] + a3 * B[p + 3, j]
                )
    for p in range(k4, k):
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
        for j in range(n):
            out[i, j] = b[j]
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
        fill(out, 0.0)
        acc_nn(A.T, B, out)
        return
    out_t = scratch[: n * k].reshape(n, k)  # narrow output: accumulate out.T = B.T @ A
    fill(out_t, 0.0)
    acc_nn(B.T, A, out_t)
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
    fill(out, 0.0)
    acc_nn(A, B_t, out)


@njit(cache=True, error_model="numpy")
def column_sums(dz: np.ndarray, db: np.ndarray) -> None:
    for j in range(dz.shape[1]):
        db[j] = 0.0
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


# ---------------------------------------------------------------- the epoch

_OPT = OPTIMIZER_CODES
SGD, MOMENTUM, NESTEROV = _OPT["sgd"], _OPT["momentum"], _OPT["nesterov"]
ADAM, ADAMW, RMSPROP = _OPT["adam"], _OPT["adamw"], _OPT["rmsprop"]

# Slots of the hyperparameter vector ``hp``, stored in the parameters' dtype so the update
# arithmetic stays in that dtype, as in optim.step. The last two are scratch slots used to
# round a float64 scalar (lr / c1, c2) to the dtype, as optim.step's dt(...) does.
HP_NAMES = ("one", "slope", "mu", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
            "alpha", "one_minus_alpha", "eps", "weight_decay", "l1", "l2", "lr", "scratch")
(ONE, SLOPE, MU, B1, OMB1, B2, OMB2, ALPHA, OMALPHA, EPS, WD, L1, L2, LR, SCRATCH) = range(
    len(HP_NAMES)
)


@njit(cache=True, error_model="numpy")
def view(buf: np.ndarray, offset: int, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) C-contiguous view of buf[offset:]; no copy."""
    return buf[offset : offset + rows * cols].reshape(rows, cols)


@njit(cache=True, error_model="numpy")
def gather(X: np.ndarray, order: np.ndarray, start: int, bs: int, out: np.ndarray) -> None:
    """out (bs, cols) = X[order[start:start + bs]]."""
    for s in range(bs):
        row = order[start + s]
        for j in range(X.shape[1]):
            out[s, j] = X[row, j]


@njit(cache=True, error_model="numpy")
def penalize(params: np.ndarray, grad: np.ndarray, sizes: np.ndarray, w_off: np.ndarray,
             l1: float, l2: float) -> None:
    """grad += l1 * sign(W) + l2 * W on the weights of every layer (biases untouched)."""
    for layer in range(w_off.shape[0]):
        start = w_off[layer]
        for i in range(start, start + sizes[layer] * sizes[layer + 1]):
            grad[i] += l1 * np.sign(params[i]) + l2 * params[i]


@njit(cache=True, error_model="numpy")
def clip_global_norm(grad: np.ndarray, clip: float, hp: np.ndarray) -> None:
    """Scale grad to global L2 norm ``clip`` if it is longer (norm summed in float64)."""
    total = 0.0
    for i in range(grad.shape[0]):
        gi = np.float64(grad[i])
        total += gi * gi
    norm = np.sqrt(total)
    if norm > clip:
        hp[SCRATCH] = clip / norm
        factor = hp[SCRATCH]
        for i in range(grad.shape[0]):
            grad[i] *= factor


@njit(cache=True, error_model="numpy")
def update(code: int, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
           lr: float, hp: np.ndarray, beta1: float, beta2: float,
           sizes: np.ndarray, w_off: np.ndarray) -> None:
    """One optimizer step in place, written as optim.step writes it (t counts from 1)."""
    hp[LR] = lr
    lr_ = hp[LR]
    if code == SGD:
        for i in range(p.shape[0]):
            p[i] -= lr_ * g[i]
    elif code == MOMENTUM or code == NESTEROV:
        mu = hp[MU]
        for i in range(p.shape[0]):
            m[i] = m[i] * mu + g[i]
            if code == NESTEROV:
                p[i] -= lr_ * (g[i] + mu * m[i])
            else:
                p[i] -= lr_ * m[i]
    elif code == ADAM or code == ADAMW:
        if code == ADAMW and hp[WD] > 0:  # decoupled decay, weights only
            decay = lr_ * hp[WD]
            for layer in range(w_off.shape[0]):
                start = w_off[layer]
                for i in range(start, start + sizes[layer] * sizes[layer + 1]):
                    p[i] -= decay * p[i]
        hp[SCRATCH] = lr / (1.0 - beta1 ** np.float64(t))  # libm pow, as Python's
        step = hp[SCRATCH]
        hp[SCRATCH] = 1.0 - beta2 ** np.float64(t)
        c2 = hp[SCRATCH]
        b1, omb1, b2, omb2, eps = hp[B1], hp[OMB1], hp[B2], hp[OMB2], hp[EPS]
        for i in range(p.shape[0]):
            m[i] = m[i] * b1 + omb1 * g[i]
            v[i] = v[i] * b2 + omb2 * g[i] * g[i]
            p[i] -= step * m[i] / (np.sqrt(v[i] / c2) + eps)
    else:  # rmsprop
        a, oma, eps = hp[ALPHA], hp[OMALPHA], hp[EPS]
        for i in range(p.shape[0]):
            v[i] = v[i] * a + oma * g[i] * g[i]
            p[i] -= lr_ * g[i] / (np.sqrt(v[i]) + eps)


@njit(cache=True, error_model="numpy")
def train_epoch(
    params: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: np.ndarray,
    X: np.ndarray, T: np.ndarray, order: np.ndarray, lrs: np.ndarray, batch: int,
    sizes: np.ndarray, w_off: np.ndarray, unit_off: np.ndarray, acts: np.ndarray,
    keep: np.ndarray, scale: np.ndarray, loss_code: int, opt_code: int, hp: np.ndarray,
    beta1: float, beta2: float, clip: float, seed: int,
    Xb: np.ndarray, Tb: np.ndarray, Z: np.ndarray, H: np.ndarray, M: np.ndarray,
    D: np.ndarray, G1: np.ndarray, G2: np.ndarray, S: np.ndarray,
) -> tuple[float, int]:
    """Train one epoch in place; return (sum over samples of the batch-mean loss times the
    batch size, correctly classified training samples).

    params, grad, m, v (P,) dtype; t (1,) int64 steps taken; X (N, n_in), T (N, n_out);
    order (n,) int64; lrs (steps,) float64; sizes (L + 1,) layer widths; w_off (L,) weight
    offsets in the flat vector; unit_off (L,) offset of each layer's activations in Z, H, M, D
    (capacity * units of the layers below); acts (L,) activation codes; keep (L,) float64 keep
    probabilities (1: no dropout) and scale (L,) dtype 1 / keep. Workspaces (1-D, dtype):
    Xb, Tb >= batch * n_in / n_out; Z, H, M, D >= batch * sum(units) (pre-activation,
    activation, dropout mask, masked activation); G1, G2 >= batch * max(units);
    S >= max(n_in * n_out) of a layer (transposes of the small-product loops).
    """
    n_layers = w_off.shape[0]
    n = order.shape[0]
    one, slope = hp[ONE], hp[SLOPE]
    if seed >= 0:  # dropout on: seeds numba's own generator for this epoch
        np.random.seed(seed)
    total_loss = 0.0
    correct = 0
    n_in0, n_out = sizes[0], sizes[n_layers]
    for step in range((n + batch - 1) // batch):
        start = step * batch
        bs = min(batch, n - start)
        xb = view(Xb, 0, bs, n_in0)
        gather(X, order, start, bs, xb)
        tb = view(Tb, 0, bs, n_out)
        gather(T, order, start, bs, tb)

        # forward: z = a @ W + b; hidden layers h = f(z), then d = h * mask under dropout
        a = xb
        for layer in range(n_layers):
            k_in, k_out = sizes[layer], sizes[layer + 1]
            W = view(params, w_off[layer], k_in, k_out)
            b = params[w_off[layer] + k_in * k_out : w_off[layer] + k_in * k_out + k_out]
            z = view(Z, unit_off[layer], bs, k_out)
            dense_forward(a, W, b, z)
            if layer == n_layers - 1:
                break
            h = view(H, unit_off[layer], bs, k_out)
            activate(acts[layer], z, h, one, slope)
            a = h
            if keep[layer] < 1.0:
                d = view(D, unit_off[layer], bs, k_out)
                dropout(h, view(M, unit_off[layer], bs, k_out), d, keep[layer], scale[layer])
                a = d

        # loss on the logits (the last z) and its gradient, into G1
        logits = view(Z, unit_off[n_layers - 1], bs, n_out)
        dz = view(G1, 0, bs, n_out)
        loss_sum, hits = loss_and_grad(loss_code, logits, tb, dz, one)
        total_loss += loss_sum
        correct += hits

        # backward: dW = a_prev.T @ dz, db = sum(dz), da = dz @ W.T -> dz of the layer below
        cur, other = G1, G2
        for layer in range(n_layers - 1, -1, -1):
            k_in, k_out = sizes[layer], sizes[layer + 1]
            dz = view(cur, 0, bs, k_out)
            if layer == 0:
                a_prev = xb
            elif keep[layer - 1] < 1.0:
                a_prev = view(D, unit_off[layer - 1], bs, k_in)
            else:
                a_prev = view(H, unit_off[layer - 1], bs, k_in)
            w0 = w_off[layer]
            mm_tn(a_prev, dz, view(grad, w0, k_in, k_out), S)
            column_sums(dz, grad[w0 + k_in * k_out : w0 + k_in * k_out + k_out])
            if layer == 0:
                break
            da = view(other, 0, bs, k_in)
            mm_nt(dz, view(params, w0, k_in, k_out), da, S)
            if keep[layer - 1] < 1.0:
                mask = view(M, unit_off[layer - 1], bs, k_in)
                for s in range(bs):
                    for j in range(k_in):
                        da[s, j] *= mask[s, j]
            zp = view(Z, unit_off[layer - 1], bs, k_in)
            hp_ = view(H, unit_off[layer - 1], bs, k_in)
            activation_backward(acts[layer - 1], zp, hp_, da, one, slope)
            cur, other = other, cur

        # gradient + penalty, clipped, then the update with this step's lr
        if hp[L1] != 0 or hp[L2] != 0:
            penalize(params, grad, sizes, w_off, hp[L1], hp[L2])
        if clip > 0:
            clip_global_norm(grad, clip, hp)
        t[0] += 1
        update(opt_code, params, grad, m, v, t[0], lrs[step], hp, beta1, beta2, sizes, w_off)
    return total_loss, correct


@njit(cache=True, error_model="numpy")
def evaluate(
    params: np.ndarray, X: np.ndarray, T: np.ndarray, batch: int, sizes: np.ndarray,
    w_off: np.ndarray, unit_off: np.ndarray, acts: np.ndarray, loss_code: int, hp: np.ndarray,
    Z: np.ndarray, H: np.ndarray, G1: np.ndarray,
) -> tuple[float, int]:
    """(sum of per-sample losses, correctly classified rows) of X (N, n_in) against T in
    evaluation mode (no dropout), forward in blocks of ``batch`` rows through the training
    workspaces Z, H (>= batch * sum(units)) and G1 (>= batch * n_out); the same forward
    and loss code as train_epoch."""
    n_layers = w_off.shape[0]
    n = X.shape[0]
    one, slope = hp[ONE], hp[SLOPE]
    n_out = sizes[n_layers]
    total_loss = 0.0
    correct = 0
    for start in range(0, n, batch):
        bs = min(batch, n - start)
        a = X[start : start + bs]
        for layer in range(n_layers):
            k_in, k_out = sizes[layer], sizes[layer + 1]
            W = view(params, w_off[layer], k_in, k_out)
            b = params[w_off[layer] + k_in * k_out : w_off[layer] + k_in * k_out + k_out]
            z = view(Z, unit_off[layer], bs, k_out)
            dense_forward(a, W, b, z)
            if layer == n_layers - 1:
                break
            h = view(H, unit_off[layer], bs, k_out)
            activate(acts[layer], z, h, one, slope)
            a = h
        logits = view(Z, unit_off[n_layers - 1], bs, n_out)
        loss_sum, hits = loss_and_grad(loss_code, logits, T[start : start + bs], view(G1, 0, bs, n_out), one)
        total_loss += loss_sum
        correct += hits
    return total_loss, correct
