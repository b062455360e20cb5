"""The benchmark's bookkeeping (FLOP count, targets), not its timings."""

from __future__ import annotations

import math
import sys

import pytest

from core import network as N
from tests.helpers import ROOT, load_script


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "scripts"))
    return load_script("benchmark")


@pytest.mark.parametrize("quick", [False, True])
def test_workloads_count_the_parameters_of_the_network(bench, quick: bool) -> None:
    for wl in bench.workloads(quick):
        hidden = tuple(N.LayerSpec(u, "relu") for u in wl.sizes[1:-1])
        output = N.LayerSpec(wl.sizes[-1], "softmax")
        spec = N.NetworkSpec(wl.sizes[0], hidden + (output,), "cross_entropy")
        assert wl.n_params == spec.n_params
    wide, tiny, digits, dropped, tanh = bench.workloads(False)
    assert (wide.sizes, wide.n, wide.batch, wide.epochs) == ((784, 256, 128, 10), 60_000, 128, 1)
    assert (tiny.sizes, tiny.n, tiny.batch, tiny.epochs) == ((2, 16, 16, 2), 2_000, 32, 200)
    assert (digits.sizes, digits.batch) == ((64, 256, 10), 64)
    assert (tiny.steps, digits.steps) == (63 * 200, 20 * 40)  # ragged last batches count
    assert (dropped.sizes, dropped.steps, dropped.dropout, digits.dropout) == (digits.sizes, digits.steps, 0.25, 0.0)
    assert dropped.label().endswith("dropout 0.25")
    assert (tanh.sizes, tanh.steps, tanh.activation, tanh.dropout) == (digits.sizes, digits.steps, "tanh", 0.0)
    assert tanh.label().endswith(" tanh") and digits.activation == "relu"
    assert bench.SINGLE_THREADED == {"digits", "digits-dropout", "digits-tanh"}


def test_targets_compare_times_and_mark_missing_contestants(bench) -> None:
    wide, tiny, *_ = (wl.label() for wl in bench.workloads(False))
    rows = [
        {"workload": wide, "implementation": "nnsweep cpu", "seconds": 0.5, "gflops": 150.0},
        {"workload": wide, "implementation": "pytorch", "seconds": 1.6},
        {"workload": tiny, "implementation": "nnsweep cpu", "seconds": 0.05,
         "us_per_step": 3.9},
        {"workload": tiny, "implementation": "numpy loop", "seconds": 0.7},
        {"workload": tiny, "implementation": "pytorch"},  # not installed: no time
        {"workload": wide, "implementation": "products only", "seconds": 0.4, "gflops": 171.0},
    ]
    goals = bench.targets(rows, peak=190.0)
    wide_torch, tiny_torch, tiny_loop, wide_peak, tiny_step, ceiling = goals
    assert wide_torch["measured"] == pytest.approx(3.2) and wide_torch["met"] is True
    assert tiny_loop["measured"] == pytest.approx(14.0) and tiny_loop["met"] is False
    assert math.isnan(tiny_torch["measured"]) and tiny_torch["met"] is None
    assert wide_peak["measured"] == pytest.approx(100 * 150 / 190) and wide_peak["met"] is True
    assert tiny_step["measured"] == 3.9 and tiny_step["met"] is True
    assert "75%" in wide_peak["target"] and "3x pytorch" in wide_torch["target"]
    assert "100x pytorch" in tiny_torch["target"] and "20x numpy loop" in tiny_loop["target"]
    # the products alone: the reference of the 75 % target, never met or missed
    assert ceiling["measured"] == pytest.approx(90.0) and ceiling["met"] is None
    assert "products alone" in ceiling["target"]


def test_flops_count_real_matrix_products(bench) -> None:
    wide, tiny, *_ = bench.workloads(False)
    # 784-256-128-10 on 60,000 samples: no input gradient for the first layer
    assert wide.flops == 60_000 * (4 * 784 * 256 + 6 * (256 * 128 + 128 * 10))
    assert wide.flops / 1e9 == pytest.approx(60.4, abs=0.05)
    assert 6 * wide.n_params * wide.n / wide.flops == pytest.approx(1.40, abs=0.01)  # the old overcount
    assert tiny.flops == 200 * 2_000 * (4 * 2 * 16 + 6 * (16 * 16 + 16 * 2))
