"""The CUDA engine's kernels one by one against NumPy: matrix products, fused activations,
softmax, losses, reductions, the optimizer update, gathering and dropout.

Runs in Numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba is
imported), or on a real GPU when NUMBA_ENABLE_CUDASIM=0 is set explicitly (tests/cuda_sim.py).
A few kernel tests also run the GPU's 16x16 tiles and 256-thread blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core import functional as F
from core.config import OPTIMIZERS, OptimizerConfig, RegularizationConfig
from core.engines import cuda_available, cuda_simulated
from core.optim import OptimizerState, clip_by_global_norm, step

if not (cuda_simulated() or cuda_available()):
    pytest.skip("neither a CUDA GPU nor the CUDA simulator", allow_module_level=True)

from core.engines._cuda_kernels import ACT_CODES, LOSS_CODES, build_kernels  # noqa: E402
from core.engines.cuda import Launch  # noqa: E402
from tests.cuda_sim import (  # noqa: E402, F401 (fast_simulator: an autouse fixture)
    MARKS,
    build_pair,
    dev,
    fast_simulator,
    layer_block,
    states,
)
from tests.engine_contract import problem  # noqa: E402

pytestmark = MARKS


# ---------------------------------------------------------------- kernels against NumPy


@pytest.mark.parametrize("tile,grid", [(4, (1, 1)), (4, (2, 3)), (16, (1, 1))])
def test_matmul_kernels_match_numpy(tile, grid):
    k = build_kernels("float64", tile, 8)
    rng = np.random.default_rng(0)
    rows, cap, n_in, n_out, w_off = 11, 13, 6, 5, 3
    P, W, b = layer_block(rng, n_in, n_out, w_off)
    A, G = rng.normal(size=(cap, n_in)), rng.normal(size=(cap, n_out))
    Z, Out, D = (dev(np.full(s, np.nan)) for s in ((cap, n_out), (cap, n_out), (cap, n_in)))
    grad = dev(np.full(P.size, np.nan))
    block = (tile, tile)
    lin, one = ACT_CODES["linear"], 1.0
    k.forward[grid, block](
        dev(A), dev(P), w_off, rows, Z, Out, dev(np.ones((1, 1))), lin, 0.1, one, one, states(1)
    )
    k.dx[grid, block](dev(G), dev(P), w_off, rows, dev(A), dev(np.ones((1, 1))), lin, 0.1, 0, D)
    k.dw[grid, block](dev(A), dev(G), rows, grad, w_off)
    z = Z.copy_to_host()
    np.testing.assert_allclose(z[:rows], A[:rows] @ W + b, rtol=1e-12)
    np.testing.assert_array_equal(Out.copy_to_host()[:rows], z[:rows])
    assert np.isnan(z[rows:]).all()  # rows past the batch are never written
    np.testing.assert_allclose(D.copy_to_host()[:rows], G[:rows] @ W.T, rtol=1e-12)
    g = grad.copy_to_host()
    dWb = np.concatenate([(A[:rows].T @ G[:rows]).ravel(), G[:rows].sum(axis=0)])
    np.testing.assert_allclose(g[w_off : w_off + dWb.size], dWb, rtol=1e-12)
    assert np.isnan(g[:w_off]).all() and np.isnan(g[w_off + dWb.size :]).all()


@pytest.mark.parametrize("act", ["linear", "relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_activation_forward_and_backward(act, dtype):
    k = build_kernels(dtype, 4, 8)
    rng = np.random.default_rng(1)
    rows, n_in, n_out, slope = 7, 5, 6, 0.1
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-6, "atol": 2e-6}
    P, W, _ = layer_block(rng, n_in, n_out)
    P = (P * 8).astype(dtype)  # |z| up to ~40: sigmoid and tanh saturate without overflow
    W = P[3 : 3 + n_in * n_out].reshape(n_in, n_out)
    A = rng.normal(size=(rows, n_in)).astype(dtype)
    Z, Out = dev(np.zeros((rows, n_out), dtype)), dev(np.zeros((rows, n_out), dtype))
    dt, code = np.dtype(dtype).type, ACT_CODES[act]
    k.forward[(1, 1), (4, 4)](
        dev(A),
        dev(P),
        3,
        rows,
        Z,
        Out,
        dev(np.ones((1, 1), dtype)),
        code,
        dt(slope),
        dt(1),
        dt(1),
        states(1),
    )
    z = Z.copy_to_host()
    np.testing.assert_allclose(Out.copy_to_host(), F.activate(act, z, slope), **tol)
    # backward into the layer below, whose pre-activations are Zp and dropout mask Mp
    G = rng.normal(size=(rows, n_out)).astype(dtype)
    Zp = (rng.normal(size=(rows, n_in)) * 5).astype(dtype)
    Mp = (rng.random((rows, n_in)) < 0.6).astype(dtype) * dt(2.5)
    D = dev(np.zeros((rows, n_in), dtype))
    k.dx[(1, 1), (4, 4)](dev(G), dev(P), 3, rows, dev(Zp), dev(Mp), code, dt(slope), 1, D)
    # reference in float64 from the same inputs: float32 NumPy has its own roundoff (1 - a*a)
    Zp64, da64 = Zp.astype(np.float64), (G.astype(np.float64) @ W.T.astype(np.float64)) * Mp
    want = F.activation_backward(act, Zp64, F.activate(act, Zp64, slope), da64, slope)
    if dtype == "float32":
        tol = {"rtol": 1e-5, "atol": 1e-5 * np.abs(want).max()}
    np.testing.assert_allclose(D.copy_to_host(), want, **tol)


def test_softmax_hidden_rows_forward_and_backward():
    k = build_kernels("float64", 4, 8)
    rng = np.random.default_rng(2)
    rows, units = 9, 5
    Z = rng.normal(size=(rows, units)) * 20
    Out = dev(np.zeros((rows, units)))
    k.softmax_rows[1, 8](dev(Z), Out, dev(np.ones((1, 1))), rows, 1.0, 1.0, states(8))
    a = F.softmax(Z)
    np.testing.assert_allclose(Out.copy_to_host(), a, rtol=1e-12, atol=1e-15)
    da = rng.normal(size=(rows, units))
    D = dev(da)
    k.softmax_back[1, 8](dev(Z), D, rows)
    np.testing.assert_allclose(
        D.copy_to_host(), F.activation_backward("softmax", Z, a, da), rtol=1e-10, atol=1e-14
    )


@pytest.mark.parametrize("loss,n_out", [("cross_entropy", 4), ("bce", 1), ("mse", 3), ("mse", 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_kernel_matches_functional(loss, n_out, dtype):
    k = build_kernels(dtype, 4, 8)
    rows, cap, pos = 10, 12, 2
    _, T = problem(loss, n=cap, n_in=1, n_out=n_out, seed=3, dtype=dtype)
    Z = (np.random.default_rng(3).normal(size=(cap, n_out)) * 3).astype(dtype)
    Z[0, 0], Z[1, -1] = 60, -60  # large logits: the fused forms must not overflow
    G = dev(np.zeros((cap, n_out), dtype))
    row_loss, row_ok = dev(np.full(rows + 4, np.nan)), dev(np.full(rows + 4, np.nan))
    k.loss_grad[1, 8](dev(Z), dev(T), rows, LOSS_CODES[loss], G, row_loss, row_ok, pos, 1)
    value, grad = F.loss_and_grad(loss, Z[:rows], T[:rows])
    tol = {"rtol": 1e-12, "atol": 1e-15} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-7}
    np.testing.assert_allclose(G.copy_to_host()[:rows], grad, **tol)
    rl, ok = row_loss.copy_to_host(), row_ok.copy_to_host()
    assert np.isfinite(rl[pos : pos + rows]).all() and np.isnan(rl[:pos]).all()
    assert rl[pos : pos + rows].sum() / rows == pytest.approx(
        value, rel=1e-12 if dtype == "float64" else 1e-5
    )
    assert ok[pos : pos + rows].sum() == F.n_correct(loss, Z[:rows], T[:rows])


@pytest.mark.parametrize("block,blocks", [(8, 3), (256, 2)])
def test_reductions_match_numpy(block, blocks):
    k = build_kernels("float64", 4, block)
    rng = np.random.default_rng(4)
    n, l1, l2 = 700, 0.01, 0.03
    grad, P = rng.normal(size=n), rng.normal(size=n)
    P[::7] = 0.0  # sign(0) = 0
    wmask = (rng.random(n) < 0.8).astype(np.float64)
    hyper = np.zeros(10)
    hyper[8], hyper[9] = l1, l2
    partial = dev(np.full(blocks, np.nan))
    k.grad_sumsq[blocks, block](dev(grad), dev(P), dev(wmask), dev(hyper), partial)
    g = grad + F.penalty_grad(P, wmask, l1, l2)
    assert partial.copy_to_host().sum() == pytest.approx(np.dot(g, g), rel=1e-12)
    out = dev(np.zeros(2))
    ok = (rng.random(n) < 0.5).astype(np.float64)
    k.sum_rows[1, block](dev(P), dev(ok), n - 3, out)
    np.testing.assert_allclose(
        out.copy_to_host(), [P[: n - 3].sum(), ok[: n - 3].sum()], rtol=1e-12
    )


@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_update_kernel_matches_core_optim_with_penalties_and_clipping(opt_name):
    """Three steps of gradient + L1/L2 term, global-norm clip, update: against core.optim."""
    opt = OptimizerConfig(name=opt_name, lr=0.1, clip_norm=0.5, weight_decay=0.2)
    reg = RegularizationConfig(l1=0.01, l2=0.05)
    launch = dataclasses.replace(Launch.simulator(), max_blocks=2, red_blocks=2)
    engine, _, _, _ = build_pair(launch, opt=opt, reg=reg, sizes=(5, 3, (4,), 2))
    spec, k = engine.spec, engine.k
    p = engine.get_params()
    mask = spec.weight_mask().astype(np.float64)
    state = OptimizerState.zeros(p.size, p.dtype)
    rng = np.random.default_rng(5)
    lrs = np.array([0.1, 0.07, 0.05])
    table = dev(engine.step_table(lrs))
    for s, lr in enumerate(lrs):
        grad = rng.normal(size=p.size) * 3  # norm well above clip_norm
        engine.grad.copy_to_device(grad)
        k.grad_sumsq[2, 8](engine.grad, engine.P, engine.wmask, engine.hyper, engine.partial)
        k.update[2, 8](
            engine.P,
            engine.grad,
            engine.m,
            engine.v,
            engine.wmask,
            engine.hyper,
            table,
            s,
            engine.code,
            0.5,
            engine.partial,
            2,
        )
        g = clip_by_global_norm(grad + F.penalty_grad(p, mask, reg.l1, reg.l2), opt.clip_norm)
        step(p, g, state, float(lr), opt, mask)
    np.testing.assert_allclose(engine.get_params(), p, rtol=1e-12, atol=1e-15)


def test_gather_by_index():
    k = build_kernels("float64", 4, 8)
    rng = np.random.default_rng(6)
    X, T = rng.normal(size=(15, 4)), rng.normal(size=(15, 2))
    order = rng.permutation(15).astype(np.int64)
    Xb, Tb = dev(np.zeros((6, 4))), dev(np.zeros((6, 2)))
    k.gather[1, 8](dev(X), dev(T), dev(order), 9, 6, Xb, Tb)
    np.testing.assert_array_equal(Xb.copy_to_host(), X[order[9:15]])
    np.testing.assert_array_equal(Tb.copy_to_host(), T[order[9:15]])


# ---------------------------------------------------------------- dropout


def dropout_forward(act: str, keep: float, seed: int):
    k = build_kernels("float64", 4, 8)
    rng = np.random.default_rng(7)
    rows, n_in, n_out = 30, 3, 20
    P, _, _ = layer_block(rng, n_in, n_out)
    Z, Out, M = (dev(np.zeros((rows, n_out))) for _ in range(3))
    st = states(16, seed)
    code = ACT_CODES[act]
    fused_keep = 1.0 if act == "softmax" else keep  # softmax layers draw in softmax_rows
    k.forward[(1, 1), (4, 4)](
        dev(rng.normal(size=(rows, n_in))),
        dev(P),
        3,
        rows,
        Z,
        Out,
        M,
        code,
        0.1,
        fused_keep,
        1 / keep,
        st,
    )
    if act == "softmax":
        k.softmax_rows[1, 8](Z, Out, M, rows, keep, 1 / keep, st)
    return Z.copy_to_host(), Out.copy_to_host(), M.copy_to_host()


@pytest.mark.parametrize("act", ["relu", "softmax"])
def test_dropout_keep_rate_scale_and_seed(act):
    keep = 0.7
    z, out, m = dropout_forward(act, keep, seed=11)
    assert set(np.unique(m)) == {0.0, 1 / keep}  # inverted dropout: kept units scaled by 1/keep
    assert np.mean(m > 0) == pytest.approx(keep, abs=0.075)  # 600 draws: 4 standard deviations
    np.testing.assert_allclose(out, F.activate(act, z) * m, rtol=1e-12)
    np.testing.assert_array_equal(
        dropout_forward(act, keep, seed=11)[2], m
    )  # same seed, same mask
    assert not np.array_equal(dropout_forward(act, keep, seed=12)[2], m)
