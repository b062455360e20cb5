"""The CUDA engine: the engine contract, multi-block launches, the kernels' signatures for a
real GPU, engine selection and devices. Its kernels one by one: tests/test_cuda_kernels.py.

Runs in Numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba is
imported), or on a real GPU when NUMBA_ENABLE_CUDASIM=0 is set explicitly (tests/cuda_sim.py).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import defaultdict

import numba
import numpy as np
import pytest

from core import network as N
from core.config import ConfigError, OptimizerConfig, RegularizationConfig
from core.engines import cuda_available, cuda_simulated, make_engine, resolve_engine
from tests.engine_contract import EngineContract, problem
from tests.helpers import tiny_config

if not (cuda_simulated() or cuda_available()):
    pytest.skip("neither a CUDA GPU nor the CUDA simulator", allow_module_level=True)

from core.engines._cuda_kernels import kernel_signatures  # noqa: E402
from core.engines.cuda import CudaEngine, Launch, resolve_device  # noqa: E402
from tests.cuda_sim import MARKS, build_pair, fast_simulator  # noqa: E402, F401 (autouse)

pytestmark = MARKS


# ---------------------------------------------------------------- the contract


class TestCudaEngine(EngineContract):
    # (rows, n_in, hidden, n_out, batch): 3 steps an epoch, the last one short; 4x4 tiles
    sizes = (19, 5, (6, 5), 3, 7)
    epochs = 2

    @pytest.fixture
    def engine_name(self) -> str:
        return "cuda"

    def test_softmax_as_hidden_activation(self, engine_name):
        opt = OptimizerConfig(name="adam", lr=0.05)
        engine, ref, metrics, _ = self.train_both(engine_name, opt=opt, act="softmax", epochs=1)
        np.testing.assert_allclose(engine.get_params(), ref.get_params(), **self.tol("float64"))
        assert metrics[0][0][0] == pytest.approx(metrics[0][1][0], rel=1e-9)


def test_multi_block_launch_and_chunked_prediction_match_reference():
    """Grids of several blocks (grid-stride loops, several partial sums of the gradient norm),
    a batch larger than the data and prediction in chunks of 6 rows."""
    launch = Launch(tile=4, block=8, max_blocks=3, max_tiles=2, red_blocks=3, chunk=6)
    opt = OptimizerConfig(name="adamw", lr=0.05, weight_decay=0.1, clip_norm=0.3)
    reg = RegularizationConfig(l1=0.01, l2=0.02)
    engine, ref, X, T = build_pair(launch, opt=opt, reg=reg, act="relu")
    for batch in (8, 64):
        order = np.random.default_rng(batch).permutation(len(X))
        lrs = np.full(-(-len(X) // batch), 0.05)
        (le, ae), (lr_, ar) = (
            engine.train_epoch(order, lrs, batch),
            ref.train_epoch(order, lrs, batch),
        )
        assert le == pytest.approx(lr_, rel=1e-9) and ae == pytest.approx(ar)
    np.testing.assert_allclose(engine.get_params(), ref.get_params(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(
        engine.predict_logits(X), ref.predict_logits(X), rtol=1e-9, atol=1e-11
    )
    assert engine.evaluate(X, T) == pytest.approx(ref.evaluate(X, T), rel=1e-9)


# ---------------------------------------------------------------- the real target


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_engine_launches_match_kernel_signatures(dtype, monkeypatch):
    """Every launch's argument types are the ones kernel_signatures() declares, which the
    PTX test below compiles for a real GPU."""
    if not cuda_simulated():
        pytest.skip("records launches through the simulator")
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    expected = kernel_signatures(dtype)
    seen = defaultdict(set)
    original = FakeCUDAKernel.__call__

    def record(self, *args):
        if self.fn.__name__ in expected:
            seen[self.fn.__name__].add(tuple(numba.typeof(getattr(a, "_ary", a)) for a in args))
        return original(self, *args)

    monkeypatch.setattr(FakeCUDAKernel, "__call__", record)
    # every kernel: softmax and relu hidden layers with dropout, clipping, chunked evaluation
    layers = (
        N.LayerSpec(4, "softmax", 0.2),
        N.LayerSpec(3, "relu", 0.2),
        N.LayerSpec(2, "softmax"),
    )
    spec = N.NetworkSpec(3, layers, "cross_entropy")
    opt = OptimizerConfig(name="adam", lr=0.01, clip_norm=1.0)
    launch = dataclasses.replace(Launch.simulator(), chunk=5)
    engine = CudaEngine(
        spec, N.init_params(spec, dtype=dtype), opt, RegularizationConfig(), launch=launch
    )
    X, T = problem("cross_entropy", n=7, n_in=3, n_out=2, dtype=dtype)
    engine.set_train_data(X, T)
    engine.train_epoch(np.arange(7), np.full(2, 0.01), 4)
    engine.evaluate(X, T)
    engine.predict_logits(X)
    assert set(seen) == set(expected)
    for name, signatures in seen.items():
        assert signatures == {expected[name]}, name


PTX_CHECK = """
from types import SimpleNamespace

import numba.cuda.dispatcher as D
from numba import cuda, types
from numba.cuda.cudadrv import nvvm

try:
    nvvm.NVVM()
except Exception:
    print("no-nvvm")
    raise SystemExit
if not cuda.is_available():  # device functions ask the current device for its capability
    D.get_current_device = lambda: SimpleNamespace(compute_capability=(7, 5))
from core.engines._cuda_kernels import build_kernels, kernel_signatures

n = 0
for dtype in ("float32", "float64"):
    k = build_kernels(dtype, 16, 256)
    for name, args in kernel_signatures(dtype).items():
        cuda.compile_ptx(getattr(k, name).py_func, types.void(*args), cc=(7, 5))
        n += 1
print("compiled", n)
"""


def test_kernels_compile_for_a_real_gpu():
    """Type-check and compile every kernel to PTX (sm_75) with the simulator off: the
    simulator runs kernels as Python and misses typing errors that fail on a GPU (it ran
    shared arrays of shape (tile, tile + 1) and max() of floats; neither compiles).
    Needs NVVM from a CUDA toolkit, not a GPU."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", PTX_CHECK],
        check=False,
        env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    if out.stdout.strip() == "no-nvvm":
        pytest.skip("no NVVM (CUDA toolkit) on this machine")
    assert out.stdout.strip() == "compiled 20"


# ---------------------------------------------------------------- engine selection and devices


def test_auto_never_picks_the_simulator_but_cuda_is_allowed_in_it():
    if not cuda_simulated():
        pytest.skip("the simulator is off")
    assert resolve_engine("auto") == "cpu"
    assert resolve_engine("cuda") == "cuda"


def test_cuda_without_a_gpu_is_one_clear_error(monkeypatch):
    import core.engines as E

    monkeypatch.setattr(E, "cuda_simulated", lambda: False)
    monkeypatch.setattr(E, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^engine\.name: .*use engine=cpu or engine=auto$"):
        resolve_engine("cuda")
    assert resolve_engine("auto") == "cpu"


def test_cuda_without_a_gpu_in_a_fresh_process():
    """The real check, simulator off: on a machine without a GPU engine=cuda is a ConfigError."""
    code = (
        "from core.config import ConfigError\n"
        "from core.engines import cuda_available, resolve_engine\n"
        "if cuda_available():\n    print('gpu')\nelse:\n"
        "    try:\n        resolve_engine('cuda')\n    except ConfigError as e:\n        print(e)\n"
    )
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "gpu":
        pytest.skip("this machine has a GPU")
    assert (
        out.stdout.startswith("engine.name: cuda was asked for")
        and "engine=cpu or engine=auto" in out.stdout
    )


def test_the_cheap_driver_check_agrees_with_numba():
    """Where core.engines skips importing numba.cuda (no driver can exist), numba itself,
    asked in a fresh process with the simulator off, finds no GPU either."""
    code = (
        "import numba.cuda\n"
        "from core.engines import _driver_may_exist\n"
        "print(_driver_may_exist(), numba.cuda.is_available())\n"
    )
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    may_exist, available = out.stdout.split()
    assert may_exist == "True" or available == "False"


@pytest.mark.parametrize(
    "device,env,field",
    [
        (None, "99", "NNSWEEP_CUDA_DEVICE"),
        (None, "gpu0", "NNSWEEP_CUDA_DEVICE"),
        (99, "0", "engine.device"),
    ],
)
def test_bad_device_is_one_clear_error(monkeypatch, device, env, field):
    monkeypatch.setenv("NNSWEEP_CUDA_DEVICE", env)
    with pytest.raises(ConfigError, match=f"^{field}: "):
        resolve_device(device)


def test_make_engine_passes_the_device(monkeypatch):
    monkeypatch.setenv("NNSWEEP_CUDA_DEVICE", "0")
    cfg = tiny_config(engine="cuda")
    spec = N.NetworkSpec(2, (N.LayerSpec(3, "relu"), N.LayerSpec(2, "softmax")), "cross_entropy")
    params = N.init_params(spec, dtype="float32")
    engine = make_engine(cfg, spec, params)
    assert isinstance(engine, CudaEngine) and engine.device == 0
    np.testing.assert_array_equal(engine.get_params(), params)
    cfg.engine.device = 99
    with pytest.raises(ConfigError, match=r"^engine\.device: 99 is out of range"):
        make_engine(cfg, spec, params)
