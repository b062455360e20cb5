"""Fit the polynomial of the CPU engine's float32 tanh near zero and report its accuracy.

    python scripts/fit_tanh32.py [--branch 0.75] [--degree 5]

``core/engines/_cpu_kernels.py`` computes float32 tanh(x) below the branch point as
x + x^3 P(x^2). This script finds P: weighted least squares on the relative error of tanh
over Chebyshev nodes of [0, branch], the weights updated towards the minimax (iteratively
reweighted), against float64 tanh (1e-16: exact at a float32's scale). It prints P's
coefficients (lowest power first, as the kernel's T0..T5) and the largest relative error,
which must stay well below half a float32 ulp (3e-8). Then it runs the kernel on every
float32 of [0, 10] above 1e-4 (~1.4e8 values, a few seconds) and prints the largest error in
ulp of the exact value and the share of results that are the nearest float.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python scripts/fit_tanh32.py` from a checkout


def fit(branch: float, degree: int, nodes: int = 4000, rounds: int = 30):
    """(coefficients of P, largest relative error of x + x^3 P(x^2) on [1e-4, branch])."""
    k = np.arange(nodes)
    x = branch * (1 + np.cos(np.pi * (k + 0.5) / nodes)) / 2
    x = x[x > 1e-4]  # below, x^3 P is far under x's ulp
    exact = np.tanh(x)
    s = x * x
    # relative error (x + x^3 P(s) - tanh) / tanh is linear in P's coefficients
    A = np.stack([x**3 * s**i / exact for i in range(degree + 1)], axis=1)
    b = (exact - x) / exact
    w = np.ones_like(x)
    for _ in range(rounds):
        c, *_ = np.linalg.lstsq(A * w[:, None], b * w, rcond=None)
        err = np.abs(A @ c - b)
        w *= np.sqrt(err / err.max() + 1e-3)  # weigh the worst points up
        w /= w.max()
    return c, float(np.abs(A @ c - b).max())


def kernel_accuracy(chunk: int = 1 << 24) -> tuple[float, float]:
    """(largest error in ulp, share of nearest floats) of the kernel over every float32 of
    [1e-4, 10]."""
    from core.engines import _cpu_kernels as K

    lo, hi = np.array([1e-4, 10.0], np.float32).view(np.int32)
    worst, nearest, total = 0.0, 0, 0
    for start in range(int(lo), int(hi) + 1, chunk):
        x = np.arange(start, min(start + chunk, int(hi) + 1), dtype=np.int32).view(np.float32)
        h = np.empty((1, len(x)), np.float32)
        K.tanh_rows(x.reshape(1, -1), h)
        exact = np.tanh(x.astype(np.float64))
        ulp = np.ldexp(1.0, np.frexp(exact)[1] - 24)
        worst = max(worst, float((np.abs(h[0] - exact) / ulp).max()))
        nearest += int(np.count_nonzero(h[0] == exact.astype(np.float32)))
        total += len(x)
    return worst, nearest / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branch", type=float, default=0.75)
    parser.add_argument("--degree", type=int, default=5)
    args = parser.parse_args()
    c, err = fit(args.branch, args.degree)
    print(f"P on [0, {args.branch}], degree {args.degree}: largest relative error {err:.2e}")
    print("coefficients:", ", ".join(repr(float(v)) for v in c))
    worst, share = kernel_accuracy()
    print(f"kernel over every float32 of [1e-4, 10]: largest error {worst:.3f} ulp, "
          f"nearest float {100 * share:.2f} %")


if __name__ == "__main__":
    main()
