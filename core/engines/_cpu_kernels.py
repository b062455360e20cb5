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

import math

import numpy as np
from llvmlite import ir
from numba import carray, njit
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ..config import ACTIVATION_CODES, LOSS_CODES, OPTIMIZER_CODES

_ACT, _LOSS = ACTIVATION_CODES, LOSS_CODES
RELU, LEAKY_RELU, SIGMOID = _ACT["relu"], _ACT["leaky_relu"], _ACT["sigmoid"]
TANH, LINEAR, SOFTMAX = _ACT["tanh"], _ACT["linear"], _ACT["softmax"]
CROSS_ENTROPY, BCE, MSE = _LOSS["cross_entropy"], _LOSS["bce"], _LOSS["mse"]

# Below this many multiply-adds a product runs as product()'s vector loops: BLAS call and
# packing overhead (~1 us) dominate tiny layers such as 32 x 16 x 16. At the threshold both
# run at the same speed on one thread (32x64x64: 2.33 against 2.35 us in float32).
BLAS_MIN_FMAS = 32 * 64 * 64

# ---------------------------------------------------------------- views without references
# The step works on views of its workspaces and of the flat parameter vectors: dozens per
# step. A numba slice or reshape is an array that shares its parent's memory record, so
# each costs an atomic reference-count increment and decrement (and a reshape a call into
# numba's helper library): 19 % of a tiny step. ``view`` and ``vec`` build the array from the
# address instead (``carray``): no record, no count, no call. They are only ever taken of
# C-contiguous 1-D buffers that the caller holds for the whole compiled call.


@intrinsic
def _address(typingctx, address):
    """void* of an integer address."""

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(cache=True, error_model="numpy", inline="always")
def view(buf: np.ndarray, offset: int, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) C-contiguous view of the 1-D buffer buf from element ``offset``; no copy,
    no reference (see above)."""
    return carray(_address(buf.ctypes.data + offset * buf.itemsize), (rows, cols), buf.dtype)


@njit(cache=True, error_model="numpy", inline="always")
def vec(buf: np.ndarray, offset: int, n: int) -> np.ndarray:
    """buf[offset:offset + n] of a 1-D buffer as ``view`` builds it."""
    return carray(_address(buf.ctypes.data + offset * buf.itemsize), (n,), buf.dtype)


# ---------------------------------------------------------------- matrix products
# Small helpers of the step are inlined by numba itself ("always"), not left to LLVM: a call
# passes every array as ~7 scalars and may add reference-count updates.
INLINE = "always"


# Small products are written with explicit vectors: numba's loop vectoriser, given a 16-wide
# output row with a trip count known only at run time, runs it as a single vector iteration
# behind checks that cost as much as the work (32x16x16 at ~23 multiply-adds a ns, 46 % of a
# core's float32 peak). ``Vector`` is a machine vector of one 64-byte register's lanes (16
# float32 or 8 float64; LLVM splits it into two halves on a machine with 32-byte registers):
# numba keeps it in a register like any scalar, and ``vload``, ``vstore`` and ``vfma`` are
# single instructions. Loads and stores are masked to the first ``count`` lanes, so ragged
# rows need no scalar tail (a masked-off lane is never touched, even past the buffer's end).


class Vector(types.Type):
    """A machine vector of ``lanes`` elements of ``dtype``, only ever a value inside a kernel."""

    def __init__(self, dtype: types.Type, lanes: int) -> None:
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vector({dtype} x {lanes})")


@register_model(Vector)
class VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type: Vector) -> None:
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


VECTOR_BYTES = 64  # one AVX-512 register


def _vector_of(dtype: types.Type) -> Vector:
    return Vector(dtype, VECTOR_BYTES // (dtype.bitwidth // 8))


def _splat(builder, value, lanes: int):
    """A vector with ``value`` in every lane."""
    vt = ir.VectorType(value.type, lanes)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), zeros)


def _masked(context, builder, arr_type, args, vec: Vector):
    """(pointer to arr[i, j] as a vector pointer, mask of the first ``count`` lanes, LLVM name
    suffix, alignment) for the intrinsics' (arr, i, j, count, ...) arguments."""
    ary = context.make_array(arr_type)(context, builder, args[0])
    shape = cgutils.unpack_tuple(builder, ary.shape, arr_type.ndim)
    strides = cgutils.unpack_tuple(builder, ary.strides, arr_type.ndim)
    item = cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, arr_type.layout,
                                     [args[1], args[2]])  # fmt: skip
    vt = context.get_value_type(vec)
    lane = ir.Constant(ir.VectorType(ir.IntType(64), vec.lanes), list(range(vec.lanes)))
    count = builder.sext(args[3], ir.IntType(64)) if args[3].type.width < 64 else args[3]
    mask = builder.icmp_signed("<", lane, _splat(builder, count, vec.lanes))
    suffix = f"v{vec.lanes}f{vec.dtype.bitwidth}"
    align = ir.Constant(ir.IntType(32), vec.dtype.bitwidth // 8)
    return builder.bitcast(item, vt.as_pointer()), mask, f"{suffix}.p0{suffix}", align, vt


@intrinsic
def vload(typingctx, arr, i, j, count):
    """arr[i, j:j + count] (a contiguous stretch of a 2-D array's row) in the first count lanes
    of a Vector, zeros in the others."""
    vec = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr, mask, suffix, align, vt = _masked(context, builder, arr, args, vec)
        fn_type = ir.FunctionType(vt, [ptr.type, align.type, mask.type, vt])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, f"llvm.masked.load.{suffix}")
        return builder.call(fn, [ptr, align, mask, ir.Constant(vt, None)])

    return vec(arr, i, j, count), codegen


@intrinsic
def vstore(typingctx, arr, i, j, count, value):
    """arr[i, j:j + count] = the first count lanes of value."""

    def codegen(context, builder, sig, args):
        ptr, mask, suffix, align, vt = _masked(context, builder, arr, args, value)
        fn_type = ir.FunctionType(ir.VoidType(), [vt, ptr.type, align.type, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, f"llvm.masked.store.{suffix}")
        builder.call(fn, [args[4], ptr, align, mask])
        return context.get_dummy_value()

    return types.void(arr, i, j, count, value), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """c + a * b for a scalar a (in every lane) and Vectors b, c, fused: one rounding."""

    def codegen(context, builder, sig, args):
        vt = context.get_value_type(c)
        x = _splat(builder, context.cast(builder, args[0], a, c.dtype), c.lanes)
        name = f"llvm.fma.v{c.lanes}f{c.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt] * 3), name)
        return builder.call(fn, [x, args[1], args[2]])

    return c(a, b, c), codegen


@intrinsic
def lanes(typingctx, arr):
    """The lanes of arr's Vector (a constant)."""
    n = _vector_of(arr.dtype).lanes
    return types.intp(arr), lambda context, builder, sig, args: context.get_constant(types.intp, n)


@intrinsic
def vzero(typingctx, arr):
    """A Vector of zeros of arr's dtype."""
    vec = _vector_of(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vec), None)

    return vec(arr), codegen


@njit(cache=True, error_model="numpy")
def product(A: np.ndarray, B: np.ndarray, out: np.ndarray, bias: np.ndarray,
            use_bias: bool) -> None:
    """out (m, n) = A (m, k) @ B (k, n), plus bias[0] (a (1, n) row) with use_bias, for B, out
    and bias with contiguous rows; A may be a transposed (F-ordered) view. Column stripes one
    Vector wide (the last one masked); in each, eight output rows at a time accumulate in
    registers over all of k, sharing each load of B's row, and are stored once:
    out[i, j] = bias[j] + A[i, 0] B[0, j] + A[i, 1] B[1, j] + ..., fused multiply-adds in
    that order (from 0 without bias). 32x16x16 in float32: 186 against 420 ns for the loops
    it replaced (rank-8 updates of each output row); starting from registers rather than from
    a filled out saves the fill and the reload of fresh stores."""
    m, k = A.shape
    n = B.shape[1]
    width = lanes(out)
    m8 = m - m % 8
    for j in range(0, n, width):
        w = min(width, n - j)
        start = vload(bias, 0, j, w) if use_bias else vzero(out)
        for i in range(0, m8, 8):
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = start
            for p in range(k):
                b = vload(B, p, j, w)
                c0, c1 = vfma(A[i, p], b, c0), vfma(A[i + 1, p], b, c1)
                c2, c3 = vfma(A[i + 2, p], b, c2), vfma(A[i + 3, p], b, c3)
                c4, c5 = vfma(A[i + 4, p], b, c4), vfma(A[i + 5, p], b, c5)
                c6, c7 = vfma(A[i + 6, p], b, c6), vfma(A[i + 7, p], b, c7)
            vstore(out, i, j, w, c0)
            vstore(out, i + 1, j, w, c1)
            vstore(out, i + 2, j, w, c2)
            vstore(out, i + 3, j, w, c3)
            vstore(out, i + 4, j, w, c4)
            vstore(out, i + 5, j, w, c5)
            vstore(out, i + 6, j, w, c6)
            vstore(out, i + 7, j, w, c7)
        for i in range(m8, m):
            c = start
            for p in range(k):
                c = vfma(A[i, p], vload(B, p, j, w), c)
            vstore(out, i, j, w, c)


@njit(cache=True, error_model="numpy", inline=INLINE)
def add_bias(z: np.ndarray, b: np.ndarray) -> None:
    """z += b[0] for a (1, n) bias row."""
    for s in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[s, j] += b[0, j]


@njit(cache=True, error_model="numpy", inline=INLINE)
def dense_forward(A: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (m, n) = A (m, k) @ W (k, n) + b[0] for a (1, n) bias row."""
    m, k = A.shape
    n = W.shape[1]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A, W, out)
        add_bias(out, b)
        return
    product(A, W, out, b, True)


@njit(cache=True, error_model="numpy", inline=INLINE)
def mm_tn(A: np.ndarray, B: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """out (k, n) = A.T @ B for A (m, k), B (m, n): the weight gradient a_prev.T @ dz.
    scratch holds >= k * n elements."""
    m, k = A.shape
    n = B.shape[1]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A.T, B, out)
        return
    if n >= k:
        product(A.T, B, out, out, False)
        return
    out_t = view(scratch, 0, n, k)  # narrow output: out.T = B.T @ A
    product(B.T, A, out_t, out_t, False)
    for i in range(k):
        for j in range(n):
            out[i, j] = out_t[j, i]


@njit(cache=True, error_model="numpy", inline=INLINE)
def mm_nt(A: np.ndarray, B: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """out (m, k) = A @ B.T for A (m, n), B (k, n): the input gradient dz @ W.T.
    scratch holds >= k * n elements."""
    m, n = A.shape
    k = B.shape[0]
    if m * k * n >= BLAS_MIN_FMAS:
        np.dot(A, B.T, out)
        return
    B_t = view(scratch, 0, n, k)  # (n, k): W.T made contiguous, cheaper than strides
    for i in range(k):
        for j in range(n):
            B_t[j, i] = B[i, j]
    product(A, B_t, out, out, False)


@njit(cache=True, error_model="numpy", inline=INLINE)
def column_sums(dz: np.ndarray, db: np.ndarray) -> None:
    """db (n,) = dz (m, n).sum(0), four rows per load and store of db (row by row, each
    16-wide db waited on its own previous store: the hottest loop of a tiny step)."""
    m, n = dz.shape
    for j in range(n):
        db[j] = 0.0
    m4 = m - m % 4
    for s in range(0, m4, 4):
        for j in range(n):
            db[j] += (dz[s, j] + dz[s + 1, j]) + (dz[s + 2, j] + dz[s + 3, j])
    for s in range(m4, m):
        for j in range(n):
            db[j] += dz[s, j]


# ---------------------------------------------------------------- activations

# tanh without libm: numba calls tanhf/tanh once per element (16 ns a float32 element here,
# so a digits step of a 256-unit tanh layer took 346 us against 84 with relu). ``tanh_rows``
# computes it as plain arithmetic that the compiler vectorises, both of its branches
# computed and one selected.
# float64: for |x| < TANH_SMALL, e = expm1(2|x|) from its Taylor series (degree 17: error
# < 1e-18 there) and tanh = e / (e + 2), which does not cancel; above, e = exp(2|x|) =
# 2^n exp(r) with r = 2|x| - n ln 2 in [-ln 2 / 2, ln 2 / 2] (Cody and Waite's two-part
# ln 2; Taylor degree 13 for exp(r)) and tanh = 1 - 2 / (e + 1); |x| >= 20 gives 1. Within
# 4 ulp of math.tanh; 3.4 ns an element.
# float32 (every search trial), in float32 arithmetic on twice the lanes: below
# TANH_SMALL32, tanh = x + x^3 P(x^2) with P of degree 5 fitted to tanh's relative error on
# [0, 0.75] by scripts/fit_tanh32.py (weighted least squares towards the minimax: 1.6e-9,
# against half an ulp of 3e-8); above, 1 - 2 / (e + 1) as for float64, exp(r) of Taylor
# degree 7 and 2^n added to the exponent bits; |x| >= 10 gives 1. Within 1.14 ulp of the
# exact value over every float32 of [1e-4, 10], the nearest float for 98 % of them (the
# script checks this; tests/test_engine_cpu.py samples it): NumPy's float32 tanh is not
# correctly rounded either. 0.7 against 3.4 ns an element (float64 arithmetic, then
# rounded, before).
TANH_SMALL = 0.34657359027997264  # ln 2 / 2
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split
INV_LN2 = 1.4426950408889634
# 1 / k!, the Taylor coefficients of exp (as constants: the polynomials below are written
# out, since a loop over a table stopped the compiler from vectorising the element loop)
(C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16,
 C17) = (1.0 / math.factorial(k) for k in range(18))  # fmt: skip
POW2 = np.array([2.0**k for k in range(64)])  # 2^n, n = round(2|x| / ln 2) <= 58


@njit(cache=True, error_model="numpy", inline="always")
def exp_reduced(r: float) -> float:
    """exp(r) for |r| <= ln 2 / 2 (Taylor degree 13); inlined into the element loops of
    tanh_rows and sigmoid_rows, which scale it by a power of 2."""
    return C0 + r * (C1 + r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * (C6 + r * (C7 + r * (
        C8 + r * (C9 + r * (C10 + r * (C11 + r * (C12 + r * C13))))))))))))  # fmt: skip


TANH_SMALL32, TANH_CAP32 = np.float32(0.75), np.float32(10.0)
# P's coefficients, lowest power first (the fit: see above)
T0, T1, T2, T3, T4, T5 = (np.float32(c) for c in (
    -0.33333315124865737, 0.1333269410771202, -0.05389272622388696, 0.021452040491038146,
    -0.00765726452275046, 0.0017369409454462289))  # fmt: skip
E0, E1, E2, E3, E4, E5, E6, E7 = (np.float32(c) for c in (C0, C1, C2, C3, C4, C5, C6, C7))
LN2_HI32, LN2_LO32 = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
INV_LN2_32, ONE_F32, TWO_F32, HALF_F32 = (np.float32(c) for c in (INV_LN2, 1.0, 2.0, 0.5))


@intrinsic
def scale_by_pow2(typingctx, x, n):
    """x * 2^n for a float32 x and an integer n, by adding n to x's exponent bits: exact, for
    the caller's range only (no overflow, no subnormal result)."""
    if x != types.float32 or not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        k = builder.trunc(args[1], i32) if args[1].type.width > 32 else args[1]
        bits = builder.add(builder.bitcast(args[0], i32), builder.shl(k, ir.Constant(i32, 23)))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(x, n), codegen


@njit(cache=True, error_model="numpy")
def tanh_rows32(z: np.ndarray, h: np.ndarray) -> None:
    """h = tanh(z) for float32 z, h (batch, units) in float32 arithmetic, as described above."""
    m, n = z.shape
    for s in range(m):
        for j in range(n):
            x = z[s, j]
            a = abs(x)
            a = a if a < TANH_CAP32 else TANH_CAP32  # noqa: FURB136 (NaN -> cap; restored below)
            q = a * a
            small = a + a * q * (T0 + q * (T1 + q * (T2 + q * (T3 + q * (T4 + q * T5)))))
            y = a + a
            k = np.int32(y * INV_LN2_32 + HALF_F32)  # y >= 0: round half up; k <= 29
            r = (y - np.float32(k) * LN2_HI32) - np.float32(k) * LN2_LO32
            e_r = E0 + r * (E1 + r * (E2 + r * (E3 + r * (E4 + r * (E5 + r * (E6 + r * E7))))))
            large = ONE_F32 - TWO_F32 / (scale_by_pow2(np.float32(e_r), k) + ONE_F32)
            th = small if a < TANH_SMALL32 else large
            th = th if x == x else x  # noqa: PLR0124 (NaN stays NaN)
            h[s, j] = np.copysign(th, x)


@njit(cache=True, error_model="numpy")
def tanh_rows(z: np.ndarray, h: np.ndarray) -> None:
    """h = tanh(z) for z, h (batch, units), as described above (float32 arrays: tanh_rows32).
    A function of its own, not inlined: written inside ``activate`` (inlined into
    ``forward``) the loop was not vectorised (16 ns an element)."""
    if z.itemsize == 4 and h.itemsize == 4:  # a constant of the compiled types
        tanh_rows32(z, h)
        return
    m, n = z.shape
    for s in range(m):
        for j in range(n):
            tx = np.float64(z[s, j])
            ax = abs(tx)
            y = 2.0 * (ax if ax < 20.0 else 20.0)  # noqa: FURB136 (NaN -> 20; restored below)
            # expm1(y) = y (1 + y / 2! + ... + y^16 / 17!), for small |x|
            em1 = y * (C1 + y * (C2 + y * (C3 + y * (C4 + y * (C5 + y * (C6 + y * (C7 + y * (
                C8 + y * (C9 + y * (C10 + y * (C11 + y * (C12 + y * (C13 + y * (C14 + y * (
                    C15 + y * (C16 + y * C17))))))))))))))))  # fmt: skip
            small = em1 / (em1 + 2.0)
            k = np.int64(y * INV_LN2 + 0.5)  # y >= 0: round half up
            r = (y - k * LN2_HI) - k * LN2_LO
            e_r = exp_reduced(r)
            large = 1.0 - 2.0 / (POW2[k] * e_r + 1.0)
            th = small if ax < TANH_SMALL else large
            th = th if ax == ax else ax  # noqa: PLR0124 (NaN stays NaN)
            h[s, j] = np.copysign(th, tx)


# sigmoid the same way: e = exp(-|x|) = 2^-n exp(-r) with n = round(|x| / ln 2) (|x| capped at
# 745, where exp underflows to 0 in float64) and r as for tanh, then 1 / (1 + e) or
# e / (1 + e) as the libm version computes them: within 4 ulp of the exact value in float64
# (1.9 ns an element against libm's ~2.4; a digits step of a 256-unit sigmoid layer
# 124 -> 110 us, 84 with relu)
POW2_NEG = np.array([2.0**-k for k in range(1100)])  # 2^-n, 0 from n = 1075


@njit(cache=True, error_model="numpy")
def sigmoid_rows(z: np.ndarray, h: np.ndarray) -> None:
    """h = sigmoid(z) for z, h (batch, units), as described above (not inlined, as tanh_rows)."""
    m, n = z.shape
    for s in range(m):
        for j in range(n):
            sx = np.float64(z[s, j])
            ax = abs(sx)
            y = ax if ax < 745.0 else 745.0  # noqa: FURB136 (NaN -> 745; restored below)
            k = np.int64(y * INV_LN2 + 0.5)  # y >= 0: round half up
            r = (k * LN2_HI - y) + k * LN2_LO  # -y = -k ln 2 + r
            e_r = exp_reduced(r)
            e = POW2_NEG[k] * e_r
            sg = 1.0 / (1.0 + e) if sx >= 0.0 else e / (1.0 + e)
            h[s, j] = sg if ax == ax else ax  # noqa: PLR0124 (NaN stays NaN)


@njit(cache=True, error_model="numpy", inline=INLINE)
def activate(code: int, z: np.ndarray, h: np.ndarray, one: float, slope: float) -> None:
    """h = f(z) for z, h (batch, units); one and slope carry the array dtype. One loop per
    activation, so each is a plain loop the compiler vectorises (no branch on the code)."""
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
    elif code == RELU:
        for s in range(m):
            for j in range(n):
                x = z[s, j]
                h[s, j] = zero if x <= zero else x  # noqa: FURB136 (max() would turn NaN into 0)
    elif code == LEAKY_RELU:
        for s in range(m):
            for j in range(n):
                x = z[s, j]
                h[s, j] = x if x > zero else x * slope
    elif code == SIGMOID:
        sigmoid_rows(z, h)
    elif code == TANH:
        tanh_rows(z, h)
    else:  # linear
        for s in range(m):
            for j in range(n):
                h[s, j] = z[s, j]


@njit(cache=True, error_model="numpy", inline=INLINE)
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
    elif code == RELU:  # da * 0 rather than 0 keeps NaN/inf as the reference does
        for s in range(m):
            for j in range(n):
                da[s, j] = da[s, j] if z[s, j] > zero else da[s, j] * zero
    elif code == LEAKY_RELU:
        for s in range(m):
            for j in range(n):
                da[s, j] = da[s, j] if z[s, j] > zero else da[s, j] * slope
    elif code == SIGMOID:
        for s in range(m):
            for j in range(n):
                da[s, j] = da[s, j] * h[s, j] * (one - h[s, j])
    elif code == TANH:
        for s in range(m):
            for j in range(n):
                da[s, j] = da[s, j] * (one - h[s, j] * h[s, j])


# Dropout's generator: SplitMix64 of (the epoch's key + element counter x golden ratio), one
# 64-bit hash per mask element, counter-based so the loop has no carried state and
# vectorises (0.4 ns an element against 8.5 ns for np.random.random() in the loop, which
# cost a digits epoch of a 499-unit layer at batch 32 ~4.4 ms of its 9.2).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1, MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
S27, S30, S31, S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
TWO32 = 4294967296.0


@njit(cache=True, error_model="numpy", inline=INLINE)
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijection of 64-bit words whose output bits look random."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@njit(cache=True, error_model="numpy")
def dropout(h: np.ndarray, mask: np.ndarray, out: np.ndarray, keep: float, scale: float,
            key: np.uint64, first: np.uint64) -> None:
    """Inverted dropout: mask = (u < keep) / keep, out = h * mask. u is the top 32 bits of
    mix64(key + (first + element index) * GOLDEN): ``first`` numbers the mask's first
    element among all drawn in the epoch (forward: from the step and the layer's offset)."""
    zero = scale - scale
    threshold = np.uint64(keep * TWO32)
    n = h.shape[1]
    for s in range(h.shape[0]):
        row = first + np.uint64(s * n)
        for j in range(n):
            u = mix64(key + (row + np.uint64(j)) * GOLDEN) >> S32
            mask[s, j] = scale if u < threshold else zero
            out[s, j] = h[s, j] * mask[s, j]


# ---------------------------------------------------------------- losses on logits


@njit(cache=True, error_model="numpy", inline=INLINE)
def argmax_row(a: np.ndarray, s: int) -> int:
    best = 0
    for j in range(1, a.shape[1]):
        if a[s, j] > a[s, best]:
            best = j
    return best


@njit(cache=True, error_model="numpy")
def loss_and_grad(
    code: int, z: np.ndarray, T: np.ndarray, g: np.ndarray, hp: np.ndarray
) -> tuple[float, int]:
    """Fill g (n, k) with dL/dz of the mean loss; return (sum of per-sample losses in float64,
    correctly classified rows). Same formulas as functional.loss_and_grad and n_correct.

    Cross-entropy per row, with m = max(z) and se = sum(exp(z - m)): the probabilities are
    exp(z - m) / se (the largest term is 1 exactly, so k - 1 exps) and the loss is
    sum(T) log(se) - sum(T (z - m)). The log is taken once per batch: for one-hot rows the
    se (each in [1, k]) are multiplied in float64 and the product's log added (flushed before
    it could overflow), so a row costs no log at all."""
    one = hp[ONE]
    zero = one - one
    n, k = z.shape
    total = 0.0
    correct = 0
    if code == CROSS_ENTROPY:
        hp[SCRATCH] = 1.0 / n
        inv_n = hp[SCRATCH]
        prod = 1.0
        for s in range(n):
            best = 0  # argmax, the first of equal maxima as argmax_row
            for j in range(1, k):
                if z[s, j] > z[s, best]:
                    best = j
            mx = z[s, best]
            se = one
            for j in range(k):
                if j != best:
                    g[s, j] = np.exp(z[s, j] - mx)  # unnormalised probabilities
                    se += g[s, j]
            g[s, best] = one
            inv_se = one / se
            row, t_sum = zero, zero
            target = 0  # argmax_row(T, s), as a select rather than a branch
            for j in range(k):
                row += T[s, j] * (z[s, j] - mx)
                t_sum += T[s, j]
                g[s, j] = (g[s, j] * inv_se - T[s, j]) * inv_n
                target = j if T[s, j] > T[s, target] else target
            total -= row
            if t_sum == one:
                prod *= se
                if prod > 1e250:
                    total += np.log(prod)
                    prod = 1.0
            else:  # soft or empty targets
                total += t_sum * np.log(np.float64(se))
            correct += best == target
        total += np.log(prod)
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
# arithmetic stays in that dtype, as in optim.step. The last four are set every step: they
# round a float64 scalar (lr, lr / c1, 1 / c2, a clipping factor) to the dtype, as
# optim.step's dt(...) does.
HP_NAMES = ("one", "slope", "mu", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
            "alpha", "one_minus_alpha", "eps", "weight_decay", "l1", "l2", "lr", "step",
            "inv_c2", "scratch")  # fmt: skip
(ONE, SLOPE, MU, B1, OMB1, B2, OMB2, ALPHA, OMALPHA, EPS, WD, L1, L2, LR, STEP, INV_C2,
 SCRATCH) = range(len(HP_NAMES))  # fmt: skip


@njit(cache=True, error_model="numpy", inline=INLINE)
def gather(X: np.ndarray, order: np.ndarray, start: int, bs: int, out: np.ndarray) -> None:
    """out (bs, cols) = X[order[start:start + bs]]."""
    for s in range(bs):
        row = order[start + s]
        for j in range(X.shape[1]):
            out[s, j] = X[row, j]


@njit(cache=True, error_model="numpy")
def penalize(p: np.ndarray, g: np.ndarray, l1: float, l2: float) -> None:
    """g += l1 * sign(W) + l2 * W for the weights W = p of one layer (flat)."""
    for i in range(p.shape[0]):
        g[i] += l1 * np.sign(p[i]) + l2 * p[i]


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


@njit(cache=True, error_model="numpy", inline=INLINE)
def step_scalars(code: int, hp: np.ndarray, lr: float, t: int, beta1: float,
                 beta2: float) -> None:
    """This step's lr, Adam's lr / c1 and 1 / c2 (t counts from 1), rounded to the dtype."""
    hp[LR] = lr
    if code == ADAM or code == ADAMW:
        hp[STEP] = lr / (1.0 - beta1 ** np.float64(t))  # libm pow, as Python's
        hp[INV_C2] = 1.0 / (1.0 - beta2 ** np.float64(t))


@njit(cache=True, error_model="numpy")
def update(code: int, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, n_w: int,
           hp: np.ndarray) -> None:
    """One optimizer step in place on one layer's slice of the flat vectors (its n_w weights,
    then its biases), written as optim.step writes it, with step_scalars' values in hp."""
    lr_ = hp[LR]
    if code == SGD:
        for i in range(p.shape[0]):
            p[i] -= lr_ * g[i]
    elif code == MOMENTUM:
        mu = hp[MU]
        for i in range(p.shape[0]):
            m[i] = m[i] * mu + g[i]
            p[i] -= lr_ * m[i]
    elif code == NESTEROV:
        mu = hp[MU]
        for i in range(p.shape[0]):
            m[i] = m[i] * mu + g[i]
            p[i] -= lr_ * (g[i] + mu * m[i])
    elif code == ADAM or code == ADAMW:
        if code == ADAMW and hp[WD] > 0:  # decoupled decay, weights only
            decay = lr_ * hp[WD]
            for i in range(n_w):
                p[i] -= decay * p[i]
        # v * (1 / c2) rather than optim.step's v / c2: a vector division fewer per element,
        # 1.6x faster on the wide net's 235k parameters; the results differ in the last bit
        step, inv_c2 = hp[STEP], hp[INV_C2]
        b1, omb1, b2, omb2, eps = hp[B1], hp[OMB1], hp[B2], hp[OMB2], hp[EPS]
        for i in range(p.shape[0]):
            m[i] = m[i] * b1 + omb1 * g[i]
            v[i] = v[i] * b2 + omb2 * g[i] * g[i]
            p[i] -= step * m[i] / (np.sqrt(v[i] * inv_c2) + eps)
    else:  # rmsprop
        a, oma, eps = hp[ALPHA], hp[OMALPHA], hp[EPS]
        for i in range(p.shape[0]):
            v[i] = v[i] * a + oma * g[i] * g[i]
            p[i] -= lr_ * g[i] / (np.sqrt(v[i]) + eps)


@njit(cache=True, error_model="numpy", inline=INLINE)
def update_layer(code: int, params: np.ndarray, grad: np.ndarray, m: np.ndarray,
                 v: np.ndarray, lo: int, n_w: int, hi: int, hp: np.ndarray,
                 penalties: bool = True) -> None:
    """L1/L2 on the weights params[lo:lo + n_w] (unless done already), then the optimizer
    step on params[lo:hi]."""
    if penalties and (hp[L1] != 0 or hp[L2] != 0):
        penalize(vec(params, lo, n_w), vec(grad, lo, n_w), hp[L1], hp[L2])
    n = hi - lo
    update(code, vec(params, lo, n), vec(grad, lo, n), vec(m, lo, n), vec(v, lo, n), n_w, hp)


@njit(cache=True, error_model="numpy")
def forward(
    params: np.ndarray, x: np.ndarray, sizes: np.ndarray, w_off: np.ndarray,
    unit_off: np.ndarray, acts: np.ndarray, keep: np.ndarray, scale: np.ndarray,
    hp: np.ndarray, Z: np.ndarray, H: np.ndarray, M: np.ndarray, D: np.ndarray,
    train: bool, key: np.uint64, step: int,
) -> np.ndarray:
    """Forward pass of x (bs, n_in): z = a @ W + b per layer into Z; hidden layers
    h = f(z) into H, then with ``train`` d = h * mask into D under dropout (masks into M,
    drawn from dropout's generator with the epoch's ``key``; ``step`` numbers the minibatch,
    so every element of an epoch's masks gets its own counter).
    Returns the logits, a (bs, n_out) view of Z."""
    n_layers = w_off.shape[0]
    bs = x.shape[0]
    one, slope = hp[ONE], hp[SLOPE]
    a = x
    for layer in range(n_layers):
        k_in, k_out = sizes[layer], sizes[layer + 1]
        W = view(params, w_off[layer], k_in, k_out)
        b = view(params, w_off[layer] + k_in * k_out, 1, k_out)
        z = view(Z, unit_off[layer], bs, k_out)
        dense_forward(a, W, b, z)
        if layer == n_layers - 1:
            break
        h = view(H, unit_off[layer], bs, k_out)
        activate(acts[layer], z, h, one, slope)
        a = h
        if train and keep[layer] < 1.0:
            d = view(D, unit_off[layer], bs, k_out)
            first = np.uint64(step) * np.uint64(M.shape[0]) + np.uint64(unit_off[layer])
            dropout(h, view(M, unit_off[layer], bs, k_out), d, keep[layer], scale[layer], key,
                    first)
            a = d
    return view(Z, unit_off[n_layers - 1], bs, sizes[n_layers])


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
    S >= max(n_in * n_out) of a layer (the transposes of the small-product loops).

    Without clipping each layer is updated as soon as its gradient is complete (the
    gradient is still in cache; its weights were already used for the input gradient);
    clipping needs the global norm, so with it every layer is updated after the backward pass.
    """
    n_layers = w_off.shape[0]
    n = order.shape[0]
    one, slope = hp[ONE], hp[SLOPE]
    key = mix64(np.uint64(max(seed, 0)))  # dropout's generator: the epoch's key
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
        logits = forward(params, xb, sizes, w_off, unit_off, acts, keep, scale, hp, Z, H, M,
                         D, True, key, step)  # fmt: skip

        # loss on the logits and its gradient, into G1
        dz = view(G1, 0, bs, n_out)
        loss_sum, hits = loss_and_grad(loss_code, logits, tb, dz, hp)
        total_loss += loss_sum
        correct += hits
        t[0] += 1
        step_scalars(opt_code, hp, lrs[step], t[0], beta1, beta2)

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
            n_w = k_in * k_out
            mm_tn(a_prev, dz, view(grad, w0, k_in, k_out), S)
            column_sums(dz, vec(grad, w0 + n_w, k_out))
            if layer > 0:
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
            if clip <= 0:  # this layer's W is no longer needed: update it now
                update_layer(opt_code, params, grad, m, v, w0, n_w, w0 + n_w + k_out, hp)

        if clip > 0:  # penalties, then the global norm, then every layer's update
            for layer in range(n_layers):
                w0, n_w = w_off[layer], sizes[layer] * sizes[layer + 1]
                if hp[L1] != 0 or hp[L2] != 0:
                    penalize(vec(params, w0, n_w), vec(grad, w0, n_w), hp[L1], hp[L2])
            clip_global_norm(grad, clip, hp)
            for layer in range(n_layers):
                w0, n_w = w_off[layer], sizes[layer] * sizes[layer + 1]
                update_layer(opt_code, params, grad, m, v, w0, n_w, w0 + n_w + sizes[layer + 1],
                             hp, False)
    return total_loss, correct


@njit(cache=True, error_model="numpy")
def evaluate(
    params: np.ndarray, X: np.ndarray, T: np.ndarray, batch: int, sizes: np.ndarray,
    w_off: np.ndarray, unit_off: np.ndarray, acts: np.ndarray, keep: np.ndarray,
    scale: np.ndarray, loss_code: int, hp: np.ndarray, Z: np.ndarray, H: np.ndarray,
    G1: np.ndarray,
) -> tuple[float, int]:
    """(sum of per-sample losses, correctly classified rows) of X (N, n_in) against T in
    evaluation mode (no dropout), forward in blocks of ``batch`` rows through the training
    workspaces Z, H (>= batch * sum(units)) and G1 (>= batch * n_out): train_epoch's
    forward and loss."""
    n_out = sizes[w_off.shape[0]]
    total_loss = 0.0
    correct = 0
    for start in range(0, X.shape[0], batch):
        bs = min(batch, X.shape[0] - start)
        logits = forward(params, X[start : start + bs], sizes, w_off, unit_off, acts, keep,
                         scale, hp, Z, H, Z, Z, False, np.uint64(0), 0)  # fmt: skip
        loss_sum, hits = loss_and_grad(loss_code, logits, T[start : start + bs],
                                       view(G1, 0, bs, n_out), hp)  # fmt: skip
        total_loss += loss_sum
        correct += hits
    return total_loss, correct
