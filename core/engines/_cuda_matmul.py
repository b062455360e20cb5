"""Tiled shared-memory matrix products of the CUDA engine, with fused epilogues.

Three products cover a dense layer's forward and backward passes. They read the layer's
weights straight from the flat parameter vector P, where the (n_in + 1, n_out) row-major
block at ``w_off`` holds W and then b: the bias is the weight of a constant-1 input column.

  forward  Z = [A, 1] @ [W; b]      epilogue: activation, inverted dropout -> Out, mask M
  dx       D = dZ @ W.T             epilogue: times the dropout mask, times f'(z) of layer i-1
  dw       [dW; db] = [A, 1].T @ dZ   written straight into the flat gradient

Every kernel walks its output tiles with a grid-stride loop (any grid is correct; the loops
are uniform across a block, so ``syncthreads`` is safe) and pads ragged edges with zeros in
shared memory. Loads are coalesced along the fast index of the source matrix; a tile read
across its rows is stored transposed into a (tile, tile + 1) array to avoid bank conflicts.
Only the first ``rows`` rows of the batch buffers are used.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from numba import cuda


def build_matmuls(
    ft: object, tile: int, act_forward: Callable, act_backward: Callable, uniform: Callable
) -> SimpleNamespace:
    """The three products for scalar type ``ft`` (a numba float type) and a square tile.

    ``act_forward(code, z, slope)``, ``act_backward(code, z, da, slope)`` and
    ``uniform(states, i)`` are device functions of the same scalar type.
    """
    zero, one = ft(0.0), ft(1.0)
    padded = (tile, tile + 1)  # shared shapes must be compile-time constants, not expressions

    @cuda.jit
    def forward(A, P, w_off, rows, Z, Out, M, act, slope, keep, inv_keep, states):
        # A (>= rows, n_in) -> Z, Out, M (>= rows, n_out); M only written when keep < 1
        sA = cuda.shared.array((tile, tile), ft)
        sW = cuda.shared.array((tile, tile), ft)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_in, n_out = A.shape[1], Z.shape[1]
        # this thread's RNG state: one per thread of the grid
        tid = (cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x) * tile * tile + ty * tile + tx
        for tr in range(cuda.blockIdx.y, (rows + tile - 1) // tile, cuda.gridDim.y):
            for tc in range(cuda.blockIdx.x, (n_out + tile - 1) // tile, cuda.gridDim.x):
                r, c = tr * tile + ty, tc * tile + tx
                acc = zero
                for k0 in range(0, n_in + 1, tile):
                    k = k0 + tx  # column of [A, 1]
                    if r < rows and k < n_in:
                        sA[ty, tx] = A[r, k]
                    elif k == n_in:
                        sA[ty, tx] = one
                    else:
                        sA[ty, tx] = zero
                    kw = k0 + ty  # row of [W; b]; row n_in is b
                    if kw <= n_in and c < n_out:
                        sW[ty, tx] = P[w_off + kw * n_out + c]
                    else:
                        sW[ty, tx] = zero
                    cuda.syncthreads()
                    for kk in range(tile):
                        acc += sA[ty, kk] * sW[kk, tx]
                    cuda.syncthreads()
                if r < rows and c < n_out:
                    Z[r, c] = acc
                    h = act_forward(act, acc, slope)
                    if keep < one:
                        m = inv_keep if uniform(states, tid) < keep else zero
                        M[r, c] = m
                        h = h * m
                    Out[r, c] = h

    @cuda.jit
    def dx(G, P, w_off, rows, Zp, Mp, act, slope, use_mask, D):
        # G (>= rows, n_out) = dL/dZ of this layer -> D (>= rows, n_in) = dL/dZ of the one below
        sG = cuda.shared.array((tile, tile), ft)
        sWt = cuda.shared.array(padded, ft)  # sWt[c, k] = W[k, c]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_out, n_in = G.shape[1], D.shape[1]
        for tr in range(cuda.blockIdx.y, (rows + tile - 1) // tile, cuda.gridDim.y):
            for tk in range(cuda.blockIdx.x, (n_in + tile - 1) // tile, cuda.gridDim.x):
                r, k = tr * tile + ty, tk * tile + tx
                acc = zero
                for c0 in range(0, n_out, tile):
                    c = c0 + tx
                    if r < rows and c < n_out:
                        sG[ty, tx] = G[r, c]
                    else:
                        sG[ty, tx] = zero
                    kw = tk * tile + ty  # W row read along c: coalesced
                    if kw < n_in and c < n_out:
                        sWt[tx, ty] = P[w_off + kw * n_out + c]
                    else:
                        sWt[tx, ty] = zero
                    cuda.syncthreads()
                    for cc in range(tile):
                        acc += sG[ty, cc] * sWt[cc, tx]
                    cuda.syncthreads()
                if r < rows and k < n_in:
                    if use_mask:
                        acc = acc * Mp[r, k]
                    D[r, k] = act_backward(act, Zp[r, k], acc, slope)

    @cuda.jit
    def dw(A, G, rows, grad, w_off):
        # [A, 1].T (n_in + 1, rows) @ G (rows, n_out) -> grad[w_off : w_off + (n_in + 1) * n_out]
        sAt = cuda.shared.array(padded, ft)  # sAt[k, r] = A[r, k]
        sG = cuda.shared.array((tile, tile), ft)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n_in, n_out = A.shape[1], G.shape[1]
        for tk in range(cuda.blockIdx.y, (n_in + tile) // tile, cuda.gridDim.y):
            for tc in range(cuda.blockIdx.x, (n_out + tile - 1) // tile, cuda.gridDim.x):
                k, c = tk * tile + ty, tc * tile + tx
                acc = zero
                for r0 in range(0, rows, tile):
                    ra, ka = r0 + ty, tk * tile + tx  # A row read along k: coalesced
                    if ra < rows and ka < n_in:
                        sAt[tx, ty] = A[ra, ka]
                    elif ra < rows and ka == n_in:
                        sAt[tx, ty] = one
                    else:
                        sAt[tx, ty] = zero
                    if ra < rows and c < n_out:
                        sG[ty, tx] = G[ra, c]
                    else:
                        sG[ty, tx] = zero
                    cuda.syncthreads()
                    for rr in range(tile):
                        acc += sAt[ty, rr] * sG[rr, tx]
                    cuda.syncthreads()
                if k <= n_in and c < n_out:
                    grad[w_off + k * n_out + c] = acc

    return SimpleNamespace(forward=forward, dx=dx, dw=dw)
