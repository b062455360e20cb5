"""The fast CPU engine: the engine contract, plus what is special about the fused epoch.

Besides the contract battery (small ragged shapes, loops instead of BLAS), this checks the BLAS
path on a bigger net against the reference, dropout's masks and gradients, reproducibility of
dropout per engine, and that a second engine reuses the compiled kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import functional as F
from core import network as N
from core.config import ConfigError, OptimizerConfig, RegularizationConfig
from core.engines import _cpu_kernels as K
from core.engines.cpu import CpuEngine
from core.engines.numpy_engine import NumpyEngine
from tests.engine_contract import EngineContract, problem


class TestCpuEngine(EngineContract):
    @pytest.fixture
    def engine_name(self) -> str:
        return "cpu"


def make_spec(n_in: int, hidden: tuple[int, ...], n_out: int, *, act: str = "relu",
              loss: str = "cross_entropy", dropout: float = 0.0) -> N.NetworkSpec:
    layers = tuple(N.LayerSpec(u, act, dropout) for u in hidden)
    return N.NetworkSpec(n_in, layers + (N.LayerSpec(n_out, F.OUTPUT_ACTIVATION[loss]),), loss)


def train(engine, X: np.ndarray, T: np.ndarray, *, epochs: int, batch: int, lr: float,
          seed: int = 1) -> list[tuple[float, float]]:
    engine.set_train_data(X, T)
    rng = np.random.default_rng(seed)
    steps = -(-len(X) // batch)
    lrs = np.full(steps, lr)
    return [engine.train_epoch(rng.permutation(len(X)), lrs, batch) for _ in range(epochs)]


# (n, n_in, hidden, n_out, batch): the first two products of a batch exceed BLAS_MIN_FMAS, so
# they go through BLAS; the output layer stays on the loop path; 300 % 64 leaves a ragged batch
BIG = (300, 40, (96, 64), 5, 64)


def test_big_net_takes_the_blas_path() -> None:
    _, n_in, (h1, h2), n_out, batch = BIG
    assert batch * n_in * h1 >= K.BLAS_MIN_FMAS
    assert batch * h1 * h2 >= K.BLAS_MIN_FMAS
    assert batch * h2 * n_out < K.BLAS_MIN_FMAS


@pytest.mark.parametrize(
    "opt_name,dtype,loss", [("adam", "float64", "cross_entropy"), ("nesterov", "float64", "mse"),
                            ("rmsprop", "float32", "cross_entropy")]
)  # fmt: skip
def test_fast_path_same_weights_as_reference_after_epochs(
    opt_name: str, dtype: str, loss: str
) -> None:
    n, n_in, hidden, n_out, batch = BIG
    spec = make_spec(n_in, hidden, n_out, loss=loss)
    params = N.init_params(spec, init="he", seed=2, dtype=dtype)
    opt = OptimizerConfig(name=opt_name, lr=0.01, clip_norm=5.0)
    reg = RegularizationConfig(l2=1e-3)
    X, T = problem(loss, n=n, n_in=n_in, n_out=n_out, seed=2, dtype=dtype)
    fast = CpuEngine(spec, params, opt, reg)
    ref = NumpyEngine(spec, params, opt, reg)
    got = train(fast, X, T, epochs=4, batch=batch, lr=opt.lr)
    want = train(ref, X, T, epochs=4, batch=batch, lr=opt.lr)
    tol = {"rtol": 1e-9, "atol": 1e-11} if dtype == "float64" else {"rtol": 1e-3, "atol": 1e-4}
    np.testing.assert_allclose(fast.get_params(), ref.get_params(), **tol)
    np.testing.assert_allclose(np.array(got), np.array(want), **tol)


class FixedMasks:
    """Stands in for the reference's Generator: random() returns 0 where a unit is kept and 1
    where it is dropped, so network.forward draws exactly the given masks."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = list(masks)

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        mask = self.masks.pop(0)
        assert mask.shape == shape
        return (mask == 0).astype(np.float64)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_dropout_masks_and_gradient(act: str) -> None:
    """One full-batch SGD step with dropout: the masks drop ~p of the units, keep the rest at
    1/keep, and the step equals the reference's step taken with the very same masks."""
    p, n, n_in, hidden, n_out = 0.3, 256, 6, (48, 32), 3
    spec = make_spec(n_in, hidden, n_out, act=act, dropout=p)
    params = N.init_params(spec, init="xavier", seed=0, dtype="float64")
    X, T = problem("cross_entropy", n=n, n_in=n_in, n_out=n_out, seed=0)
    opt = OptimizerConfig(name="sgd", lr=0.1)
    engine = CpuEngine(spec, params, opt, RegularizationConfig(), seed=7)
    (loss, _), = train(engine, X, T, epochs=1, batch=n, lr=0.1)
    masks, order = [], np.random.default_rng(1).permutation(n)
    for layer, units in enumerate(hidden):
        start = engine.unit_off[layer]
        mask = engine.M[start : start + n * units].reshape(n, units)
        assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - p)}
        # zeroed fraction ~ p: n * units draws, so its standard deviation is < 0.005
        assert np.mean(mask == 0) == pytest.approx(p, abs=0.02)
        masks.append(mask)
    Xo, To = X[order], T[order]
    logits, cache = N.forward(params, spec, Xo, train=True, rng=FixedMasks(masks))
    ref_loss, dlogits = F.loss_and_grad(spec.loss, logits, To)
    expected = params - 0.1 * N.backward(params, spec, cache, dlogits)
    np.testing.assert_allclose(engine.get_params(), expected, rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-10)


def test_dropout_masks_look_like_independent_coin_flips() -> None:
    """The kernel's counter-based generator against the binomial law: each unit's dropped
    fraction over 2,048 rows scatters as a binomial's, neighbouring units and rows are
    uncorrelated, and the next epoch draws other masks."""
    p, n, units = 0.3, 2048, 64
    spec = make_spec(5, (units,), 2, dropout=p)
    X, T = problem("cross_entropy", n=n, n_in=5, n_out=2, seed=0)
    engine = CpuEngine(spec, N.init_params(spec, seed=0, dtype="float32"),
                       OptimizerConfig(name="sgd", lr=0.01), RegularizationConfig(), seed=11)
    masks = []
    for _ in range(2):
        train(engine, X, T, epochs=1, batch=n, lr=0.01)
        masks.append(engine.M[: n * units].reshape(n, units) == 0)
    dropped = masks[0]
    sd = np.sqrt(p * (1 - p) / n)
    z = (dropped.mean(axis=0) - p) / sd  # per unit: ~N(0, 1) under the binomial law
    assert abs(z.mean()) < 4 / np.sqrt(units) and 0.6 < z.std() < 1.4
    for a, b in ((dropped[:, :-1], dropped[:, 1:]), (dropped[:-1], dropped[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02
    assert np.mean(masks[0] != masks[1]) == pytest.approx(2 * p * (1 - p), abs=0.01)


def test_dropout_stream_is_per_engine() -> None:
    """Two engines of one seed give the same run even when a third one trains in between."""
    spec = make_spec(4, (16,), 3, dropout=0.5)
    params = N.init_params(spec, seed=0, dtype="float64")
    X, T = problem("cross_entropy", n=50, n_in=4, n_out=3)
    opt, reg = OptimizerConfig(name="sgd", lr=0.1), RegularizationConfig(dropout=0.5)
    a, b, c = (CpuEngine(spec, params, opt, reg, seed=s) for s in (3, 3, 4))
    for engine in (a, b, c):
        engine.set_train_data(X, T)
    lrs, order = np.full(7, 0.1), np.arange(50)
    for _ in range(3):
        a.train_epoch(order, lrs, 8)
        c.train_epoch(order, lrs, 8)
    for _ in range(3):
        b.train_epoch(order, lrs, 8)
    np.testing.assert_array_equal(a.get_params(), b.get_params())
    assert not np.allclose(a.get_params(), c.get_params())  # same weights, other masks


def test_second_engine_does_not_recompile() -> None:
    X, T = problem("cross_entropy", n=30, n_in=3, n_out=2)
    first = CpuEngine(make_spec(3, (5,), 2), N.init_params(make_spec(3, (5,), 2), dtype="float64"),
                      OptimizerConfig(name="adam"), RegularizationConfig())
    train(first, X, T, epochs=1, batch=8, lr=0.01)
    compiled = len(K.train_epoch.signatures)
    # other shapes, depth, activation, loss, optimizer, dropout: all runtime values
    spec = make_spec(3, (9, 4, 6), 1, act="sigmoid", loss="bce", dropout=0.2)
    Xb, Tb = problem("bce", n=30, n_in=3, n_out=1)
    second = CpuEngine(spec, N.init_params(spec, dtype="float64"),
                       OptimizerConfig(name="rmsprop", clip_norm=1.0),
                       RegularizationConfig(l1=0.01, dropout=0.2))
    train(second, Xb, Tb, epochs=1, batch=16, lr=0.01)
    assert len(K.train_epoch.signatures) == compiled
    # only the dtype makes a new specialisation: float32 and float64 at most
    assert {sig[0].dtype.name for sig in K.train_epoch.signatures} <= {"float32", "float64"}


def test_unsupported_dtype_is_one_clear_error() -> None:
    spec = make_spec(3, (5,), 2)
    with pytest.raises(ConfigError, match="trainer.dtype"):
        params = np.zeros(spec.n_params, np.float16)
        CpuEngine(spec, params, OptimizerConfig(), RegularizationConfig())


def test_inputs_of_other_dtypes_and_layouts_reuse_the_kernel() -> None:
    """Fortran-ordered float32 data, an int32 order and read-only arrays are converted, not
    compiled for: the run equals the one with canonical arrays."""
    spec = make_spec(4, (6,), 3)
    params = N.init_params(spec, seed=1, dtype="float64")
    X, T = problem("cross_entropy", n=20, n_in=4, n_out=3)
    a = CpuEngine(spec, params, OptimizerConfig(name="sgd", lr=0.1), RegularizationConfig())
    b = CpuEngine(spec, params, OptimizerConfig(name="sgd", lr=0.1), RegularizationConfig())
    a.set_train_data(X, T)
    Xf = np.asfortranarray(X)
    Xf.flags.writeable = False
    b.set_train_data(Xf, T.astype(np.float32))
    order = np.arange(20)[::-1]
    a.train_epoch(order, np.full(3, 0.1), 8)
    before = len(K.train_epoch.signatures)
    lrs = np.full(3, 0.1)
    lrs.flags.writeable = False
    b.train_epoch(order.astype(np.int32), lrs, 8)
    np.testing.assert_array_equal(a.get_params(), b.get_params())
    assert len(K.train_epoch.signatures) == before


def test_batch_sizes_changing_between_epochs_and_larger_than_the_data() -> None:
    spec = make_spec(4, (6,), 3)
    params = N.init_params(spec, seed=1, dtype="float64")
    X, T = problem("cross_entropy", n=20, n_in=4, n_out=3)
    opt = OptimizerConfig(name="momentum", lr=0.1)
    fast = CpuEngine(spec, params, opt, RegularizationConfig())
    ref = NumpyEngine(spec, params, opt, RegularizationConfig())
    for engine in (fast, ref):
        engine.set_train_data(X, T)
    order = np.random.default_rng(0).permutation(20)
    for batch in (3, 64, 7):  # grows the workspace, then a full-data step, then shrinks
        steps = -(-20 // batch)
        got = fast.train_epoch(order, np.full(steps, 0.1), batch)
        want = ref.train_epoch(order, np.full(steps, 0.1), batch)
        assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(fast.get_params(), ref.get_params(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("opt_name", ["adamw", "nesterov"])
def test_per_layer_update_with_penalties_matches_reference(opt_name: str, clip: float | None
                                                           ) -> None:
    """Without clipping each layer is updated inside the backward pass, with clipping after
    it: both equal the reference's one update of the whole vector, L1, L2 and decay included,
    on the BLAS path and the loops."""
    n, n_in, hidden, n_out, batch = BIG
    spec = make_spec(n_in, hidden, n_out, act="leaky_relu")
    params = N.init_params(spec, init="he", seed=3, dtype="float64")
    opt = OptimizerConfig(name=opt_name, lr=0.01, weight_decay=0.05, clip_norm=clip)
    reg = RegularizationConfig(l1=1e-3, l2=1e-2)
    X, T = problem("cross_entropy", n=n, n_in=n_in, n_out=n_out, seed=3)
    fast, ref = CpuEngine(spec, params, opt, reg), NumpyEngine(spec, params, opt, reg)
    got = train(fast, X, T, epochs=3, batch=batch, lr=opt.lr)
    want = train(ref, X, T, epochs=3, batch=batch, lr=opt.lr)
    np.testing.assert_allclose(fast.get_params(), ref.get_params(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [BIG, (200, 2, (16, 16), 2, 32)], ids=["blas", "tiny"])
def test_same_seed_gives_bit_identical_runs(dtype: str, sizes: tuple) -> None:
    """Two engines of one seed (dropout on) give the same weights, optimizer state and metrics
    bit for bit, in both dtypes, and a third with another seed does not: run to run
    reproducibility for a given thread count."""
    n, n_in, hidden, n_out, batch = sizes
    spec = make_spec(n_in, hidden, n_out, dropout=0.2)
    params = N.init_params(spec, init="he", seed=1, dtype=dtype)
    X, T = problem("cross_entropy", n=n, n_in=n_in, n_out=n_out, seed=1, dtype=dtype)
    opt, reg = OptimizerConfig(name="adam", lr=0.01), RegularizationConfig(dropout=0.2)
    runs = []
    for seed in (5, 5, 6):
        engine = CpuEngine(spec, params, opt, reg, seed=seed)
        metrics = train(engine, X, T, epochs=3, batch=batch, lr=opt.lr)
        runs.append((engine.get_params(), engine.m.copy(), engine.v.copy(), metrics))
    (p1, m1, v1, metrics1), (p2, m2, v2, metrics2), (p3, _, _, _) = runs
    assert p1.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(v1, v2)
    assert metrics1 == metrics2
    assert not np.array_equal(p1, p3)


def test_soft_targets_loss_matches_reference() -> None:
    """Cross-entropy takes its log once per batch for rows whose targets sum to 1 and per row
    otherwise: label-smoothed, half-weighted and one-hot rows mixed give the reference's loss
    and weights."""
    n, n_in, n_out, batch = 40, 5, 4, 16
    spec = make_spec(n_in, (12,), n_out, act="tanh")
    params = N.init_params(spec, init="xavier", seed=0, dtype="float64")
    X, T = problem("cross_entropy", n=n, n_in=n_in, n_out=n_out, seed=0)
    T[::3] = 0.9 * T[::3] + 0.1 / n_out  # every third row label-smoothed
    T[1::3] *= 0.5  # and the next one weighted by a half
    opt = OptimizerConfig(name="sgd", lr=0.1)
    fast = CpuEngine(spec, params, opt, RegularizationConfig())
    ref = NumpyEngine(spec, params, opt, RegularizationConfig())
    got = train(fast, X, T, epochs=2, batch=batch, lr=0.1)
    want = train(ref, X, T, epochs=2, batch=batch, lr=0.1)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-10)
    np.testing.assert_allclose(fast.get_params(), ref.get_params(), rtol=1e-10, atol=1e-12)
    assert fast.evaluate(X, T) == pytest.approx(ref.evaluate(X, T), rel=1e-10)


@pytest.mark.parametrize(
    "sizes", [(200, 2, (16, 16), 2, 32), (90, 20, (24, 9), 10, 16)], ids=["tiny", "ragged"]
)
def test_small_product_loops_match_reference(sizes: tuple) -> None:
    """Every product below BLAS_MIN_FMAS runs as loops: vector stripes of 8 output rows with
    masked ragged ends, narrow weight gradients transposed; after 3 epochs of Adam they agree
    with the NumPy reference."""
    n, n_in, hidden, n_out, batch = sizes
    widths = (n_in, *hidden, n_out)
    assert max(batch * a * b for a, b in zip(widths, widths[1:])) < K.BLAS_MIN_FMAS
    spec = make_spec(n_in, hidden, n_out, act="tanh")
    params = N.init_params(spec, init="xavier", seed=4, dtype="float64")
    X, T = problem("cross_entropy", n=n, n_in=n_in, n_out=n_out, seed=4)
    opt = OptimizerConfig(name="adam", lr=0.01)
    fast = CpuEngine(spec, params, opt, RegularizationConfig())
    ref = NumpyEngine(spec, params, opt, RegularizationConfig())
    got = train(fast, X, T, epochs=3, batch=batch, lr=opt.lr)
    want = train(ref, X, T, epochs=3, batch=batch, lr=opt.lr)
    np.testing.assert_allclose(fast.get_params(), ref.get_params(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True], ids=["A", "A.T"])
def test_vector_product_against_exact_sums(dtype: type, transposed: bool) -> None:
    """product (explicit machine vectors, masked at ragged row ends) against bias + A @ B and
    A @ B summed exactly (float64 of float32 inputs, long double of float64 ones), within the
    error bound of k fused multiply-adds, for shapes around the vector width and the 8-row
    blocks. out is a column slice of a wider array whose other columns and extra row hold 123,
    which must stay (a masked-off lane is never stored); B and the bias are column slices
    too."""
    rng = np.random.default_rng(7)
    wide = np.longdouble if dtype is np.float64 else np.float64
    eps = np.finfo(dtype).eps
    for m, k, n in [(32, 16, 16), (35, 17, 20), (3, 5, 7), (1, 1, 1), (16, 32, 2), (9, 3, 33),
                    (40, 7, 48), (8, 0, 5), (17, 2, 31)]:  # fmt: skip
        A = rng.standard_normal((k, m) if transposed else (m, k)).astype(dtype)
        A = A.T if transposed else A
        B_full = np.full((k, n + 5), np.nan, dtype)
        B_full[:, :n] = rng.standard_normal((k, n))
        bias_full = np.full((1, n + 5), np.nan, dtype)
        bias_full[:, :n] = rng.standard_normal(n)
        B, bias = B_full[:, :n], bias_full[:, :n]
        for use_bias in (True, False):
            out_full = np.full((m + 1, n + 5), 123.0, dtype)
            out = out_full[:m, :n]
            start = bias.astype(wide) if use_bias else np.zeros((1, n), wide)
            exact = start + A.astype(wide) @ B.astype(wide)
            bound = (k + 1) * eps * (np.abs(start) + np.abs(A.astype(wide)) @ np.abs(B.astype(wide)))
            K.product(A, B, out, bias, use_bias)
            assert np.all(np.abs(out.astype(wide) - exact) <= bound), (m, k, n, use_bias)
            assert np.all(out_full[m] == 123.0) and np.all(out_full[:, n:] == 123.0), (m, k, n)


def test_vector_loads_stop_at_the_row_end() -> None:
    """The masked loads read nothing past a row's end: B's last row ends on a page boundary
    followed by an unreadable page (in a child process, which a stray read would kill)."""
    import subprocess
    import sys

    code = """
import ctypes, mmap, numpy as np
from core.engines import _cpu_kernels as K
page = mmap.PAGESIZE
buf = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0  # PROT_NONE
k, n = 3, 5
B = np.frombuffer(buf, np.float32, count=k * n, offset=page - 4 * k * n).reshape(k, n)
B[...] = 1.0
A = np.ones((9, k), np.float32)
out = np.zeros((9, n), np.float32)
K.product(A, B, out, out, False)
print(out.sum())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(float(9 * 3 * 5))


def test_tanh_without_libm_matches_math_tanh() -> None:
    """The kernel's tanh (plain vectorised arithmetic, not libm) against math.tanh: float64
    within 4 ulp on a dense grid spanning both branches, their boundary and the saturation;
    float32 (its own float32 arithmetic) within 1.15 ulp of the exact value on that grid and
    on every float32 around its own branch point and saturation; NaN, +-inf and -0 kept."""
    import math

    rng = np.random.default_rng(0)
    edge = [0.0, -0.0, 5e-324, -1e-300, K.TANH_SMALL, np.nextafter(K.TANH_SMALL, 0.0),
            np.nextafter(K.TANH_SMALL, 1.0), 19.999, 20.0, 20.5, 1e308, -np.inf, np.inf]
    x = np.concatenate([rng.normal(0.0, s, 50_000) for s in (1e-3, 0.2, 1.0, 4.0)]
                       + [np.linspace(-22.0, 22.0, 40_001), edge])
    h = np.empty((1, len(x)))
    K.tanh_rows(x.reshape(1, -1), h)
    want = np.array([math.tanh(v) for v in x])
    ulps = np.abs(h[0] - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 4, x[np.argmax(ulps)]
    negative_zero = len(x) - len(edge) + 1
    assert np.signbit(h[0][negative_zero]) and h[0][negative_zero] == 0.0
    assert h[0][-2:].tolist() == [-1.0, 1.0]
    nan = np.full((1, 3), np.nan)
    K.tanh_rows(nan, nan)
    assert np.isnan(nan).all()

    def every_float32(lo: float, hi: float) -> np.ndarray:
        a, b = np.array([lo, hi], np.float32).view(np.int32)
        return np.arange(a, b + 1, dtype=np.int32).view(np.float32)

    with np.errstate(over="ignore"):  # 1e308 -> inf
        x32 = np.concatenate([x.astype(np.float32), every_float32(0.74, 0.76),
                              every_float32(8.9, 10.1), -every_float32(1e-40, 1e-38)])
    h32 = np.empty((1, len(x32)), np.float32)
    K.tanh_rows(x32.reshape(1, -1), h32)
    exact = np.tanh(x32.astype(np.float64))  # within 1e-16: exact at a float32's scale
    ulp = np.ldexp(1.0, np.maximum(np.frexp(exact)[1] - 24, -149))  # below |exact|
    finite = np.isfinite(x32)
    err = np.abs(h32[0].astype(np.float64) - exact)[finite] / ulp[finite]
    assert err.max() <= 1.15, x32[finite][np.argmax(err)]  # 1.134 over all of [1e-4, 10]
    assert np.all(h32[0][np.abs(x32) >= 10] == np.sign(x32[np.abs(x32) >= 10]))  # saturated
    assert np.all(h32[0][np.isinf(x32)] == np.sign(x32[np.isinf(x32)]))
    assert np.signbit(h32[0][negative_zero]) and h32[0][negative_zero] == 0.0
    nan32 = np.full((1, 17), np.nan, np.float32)
    K.tanh_rows(nan32, nan32)
    assert np.isnan(nan32).all()


def test_sigmoid_without_libm_matches_math_exp() -> None:
    """The kernel's sigmoid against 1 / (1 + exp(-x)) from math.exp: float64 within 4 ulp
    (beyond the underflow to 0 exactly 0), float32 the nearest float, NaN kept."""
    import math

    def exact(v: float) -> float:
        if v >= 0:
            return 1.0 / (1.0 + math.exp(-v))
        e = math.exp(v)
        return e / (1.0 + e)

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, s, 30_000) for s in (1e-3, 0.5, 3.0, 40.0, 300.0)]
                       + [np.linspace(-760.0, 760.0, 30_001),
                          [0.0, 744.9, 745.0, -745.0, -746.0, -1e308, -np.inf, np.inf]])
    h = np.empty((1, len(x)))
    K.sigmoid_rows(x.reshape(1, -1), h)
    want = np.array([exact(v) for v in x])
    tiny = want == 0.0
    assert np.array_equal(h[0][tiny], want[tiny])
    ulps = np.abs(h[0][~tiny] - want[~tiny]) / np.spacing(want[~tiny])
    assert ulps.max() <= 4, x[~tiny][np.argmax(ulps)]
    nan = np.full((1, 2), np.nan)
    K.sigmoid_rows(nan, nan)
    assert np.isnan(nan).all()
    x32 = x[np.abs(x) < 1e30].astype(np.float32)
    h32 = np.empty((1, len(x32)), np.float32)
    K.sigmoid_rows(x32.reshape(1, -1), h32)
    assert np.array_equal(h32[0], np.array([exact(float(v)) for v in x32]).astype(np.float32))
