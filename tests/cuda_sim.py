"""Shared by the CUDA tests: the simulator made fast and race-free, device arrays, RNG states
and an engine paired with the NumPy reference.

The simulator runs one Python thread per CUDA thread, so shapes are tens of rows, ragged on
purpose (nothing a multiple of a tile), and the engine uses Launch.simulator(). Import only
after checking that a GPU or the simulator is there (the test modules skip otherwise).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from numba import cuda
from numba.core.errors import NumbaDeprecationWarning

from core import functional as F
from core import network as N
from core.engines import cuda_simulated
from core.engines.cuda import CudaEngine, Launch
from core.engines.numpy_engine import NumpyEngine
from tests.engine_contract import problem

with warnings.catch_warnings():  # the simulator's numba.cuda.random passes nopython=False
    warnings.simplefilter("ignore", NumbaDeprecationWarning)
    from numba.cuda.random import create_xoroshiro128p_states

MARKS = [  # every CUDA test module's pytestmark
    pytest.mark.cuda,
    # the simulator runs numba.cuda.random's uint64 arithmetic on NumPy scalars
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning"),
]


def _race_free_shared_array(self, shape, dtype, *args, **kwargs):
    """The simulator's cuda.shared.array, made safe for its threads.

    Numba's FakeCUDAShared.array looks an allocation up by (file, line) and creates it if
    missing in two steps, so two threads of one block can each make their own "shared" array
    and compute garbage. dict.setdefault does it in one step under the GIL, and
    sys._getframe is much cheaper than the traceback.extract_stack it replaces.
    """
    if shape == 0:  # dynamic shared memory: not used by the engine, keep numba's
        return _ORIGINAL_SHARED_ARRAY(self, shape, dtype, *args, **kwargs)
    from numba.core import types
    from numba.np import numpy_support

    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    frame = sys._getframe(1)
    return self._allocations.setdefault(
        (frame.f_code.co_filename, frame.f_lineno), np.empty(shape, dtype)
    )


_ORIGINAL_SHARED_ARRAY = None


@pytest.fixture(autouse=True, scope="module")
def fast_simulator():
    """Simulated threads wait for the GIL at every barrier; a shorter switch interval makes
    the file ~5x faster (and made the shared-array race above show up). Speed only."""
    global _ORIGINAL_SHARED_ARRAY
    if not cuda_simulated():
        yield
        return
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    old = sys.getswitchinterval()
    _ORIGINAL_SHARED_ARRAY = FakeCUDAShared.array
    FakeCUDAShared.array = _race_free_shared_array
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)
    FakeCUDAShared.array = _ORIGINAL_SHARED_ARRAY


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def states(n: int, seed: int = 0):
    return create_xoroshiro128p_states(n, seed=seed)


def build_pair(
    launch: Launch, *, opt, reg, act="tanh", loss="cross_entropy", sizes=(19, 5, (6, 5), 3)
):
    n, n_in, hidden, n_out = sizes
    layers = tuple(N.LayerSpec(u, act, reg.dropout) for u in hidden)
    out = N.LayerSpec(1 if loss == "bce" else n_out, F.OUTPUT_ACTIVATION[loss])
    spec = N.NetworkSpec(n_in, layers + (out,), loss, 0.1)
    params = N.init_params(spec, init="xavier", seed=0, dtype="float64")
    X, T = problem(loss, n=n, n_in=n_in, n_out=spec.n_out)
    engine = CudaEngine(spec, params, opt, reg, seed=0, launch=launch)
    ref = NumpyEngine(spec, params, opt, reg, seed=0)
    for e in (engine, ref):
        e.set_train_data(X, T)
    return engine, ref, X, T


def layer_block(rng, n_in: int, n_out: int, w_off: int = 3):
    """A flat vector with one layer's [W; b] block at w_off, padded on both sides."""
    P = rng.normal(size=w_off + (n_in + 1) * n_out + 2)
    W = P[w_off : w_off + n_in * n_out].reshape(n_in, n_out)
    b = P[w_off + n_in * n_out : w_off + (n_in + 1) * n_out]
    return P, W, b
