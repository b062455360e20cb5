"""Epoch orders: ``np.random.default_rng(seed).permutation(n)``, epoch after epoch, compiled.

The trainer shuffles every epoch of every fold with its own generator, which serves nothing
else. NumPy's ``permutation`` takes ~11 ns an element here (22 us for 2,000 rows: 8 % of a
tiny network's epoch). ``Permutations`` gives exactly the same arrays: it takes the PCG64
state of ``default_rng(seed)`` once and runs NumPy's own algorithm on it in numba (~3 ns an
element): a Fisher-Yates shuffle of ``arange(n)`` from the last position down, position i
swapped with ``random_interval(i)``, which draws ``next_uint32() & mask`` (mask: the bits of
i) until the value is at most i; ``next_uint32`` hands out the low half of a 64-bit PCG64
output and keeps the high half for the next draw. PCG64 is the 128-bit LCG step
``state = state * MULT + inc`` followed by the XSL-RR output (the two halves xor-ed, rotated
right by the state's top 6 bits). tests/test_shuffle.py compares every array with NumPy's.

The numba code sits in this file alone (numba's cache notices edits to a function's own file
only).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

M64 = (1 << 64) - 1
MULT_HI, MULT_LO = np.uint64(2549297995355413924), np.uint64(4865540595714422341)
U32 = np.uint64(0xFFFFFFFF)
ONE, S32, S58, S63 = np.uint64(1), np.uint64(32), np.uint64(58), np.uint64(63)
SHIFTS = (np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(8), np.uint64(16), np.uint64(32))


@intrinsic
def _mulhi(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64."""
    if a != types.uint64 or b != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i128 = ir.IntType(128)
        x, y = (builder.zext(v, i128) for v in args)
        return builder.trunc(builder.lshr(builder.mul(x, y), ir.Constant(i128, 64)), ir.IntType(64))

    return types.uint64(types.uint64, types.uint64), codegen


@njit(cache=True, inline="always")
def _step(hi: np.uint64, lo: np.uint64, inc_hi: np.uint64, inc_lo: np.uint64):
    """PCG64's state after one step, (high, low), and the output word of that new state."""
    new_lo = lo * MULT_LO
    new_hi = _mulhi(lo, MULT_LO) + lo * MULT_HI + hi * MULT_LO
    lo2 = new_lo + inc_lo
    hi2 = new_hi + inc_hi + (ONE if lo2 < new_lo else np.uint64(0))
    x = hi2 ^ lo2
    r = hi2 >> S58
    return hi2, lo2, (x >> r) | (x << ((np.uint64(64) - r) & S63))


@njit(cache=True)
def _permute(st: np.ndarray, out: np.ndarray) -> None:
    """out = arange(len(out)) shuffled as NumPy's Generator.permutation does; st (6,) uint64:
    state high, low, increment high, low, has_uint32, uinteger (updated at the end; in
    local variables meanwhile, which the compiler keeps in registers across the swaps)."""
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    hi, lo, inc_hi, inc_lo, has, kept = st[0], st[1], st[2], st[3], st[4], st[5]
    for i in range(n - 1, 0, -1):
        top = np.uint64(i)
        mask = top
        for sh in SHIFTS:
            mask |= mask >> sh
        while True:
            if top <= U32:  # next_uint32
                if has != 0:
                    has, draw = np.uint64(0), kept
                else:
                    hi, lo, word = _step(hi, lo, inc_hi, inc_lo)
                    has, kept, draw = ONE, word >> S32, word & U32
            else:
                hi, lo, draw = _step(hi, lo, inc_hi, inc_lo)
            value = draw & mask
            if value <= top:
                break
        j = np.int64(value)
        out[i], out[j] = out[j], out[i]
    st[0], st[1], st[4], st[5] = hi, lo, has, kept


class Permutations:
    """``p(n)`` returns what the next ``rng.permutation(n)`` of ``rng =
    np.random.default_rng(seed)`` would (int64)."""

    def __init__(self, seed) -> None:
        state = np.random.default_rng(seed).bit_generator.state
        s, inc = state["state"]["state"], state["state"]["inc"]
        self.state = np.array([s >> 64, s & M64, inc >> 64, inc & M64, state["has_uint32"],
                               state["uinteger"]], dtype=np.uint64)

    def __call__(self, n: int) -> np.ndarray:
        out = np.empty(int(n), dtype=np.int64)
        _permute(self.state, out)
        return out
