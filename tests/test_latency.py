"""core.latency: microseconds per sample on an engine, positive and growing with width."""

from __future__ import annotations

import pytest

from core.config import LayersConfig, OptimizerConfig, RegularizationConfig
from core.engines import engine_class
from core.latency import checkpoint_latency, measure_latency
from core.network import build_spec, init_params

N_IN = 64


def engine(name: str, width: int):
    spec = build_spec(LayersConfig(hidden=[width]), RegularizationConfig(), n_in=N_IN, n_out=10,
                      loss="cross_entropy")
    params = init_params(spec, init="he", distribution="normal", scale=0.01, seed=0, dtype="float32")
    return engine_class(name)(spec, params, OptimizerConfig(), RegularizationConfig())


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_latency_is_positive_and_grows_with_width(name):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # what checkpoint_latency times with
        lat = {w: measure_latency(engine(name, w), N_IN, repeats=7) for w in (8, 4096)}
    for w in lat:
        assert set(lat[w]) == {1, 256}
        assert all(v > 0 for v in lat[w].values())
    # 4096 hidden units: 64 x 4096 + 4096 x 10 multiply-adds a sample, 510 x those of 8 units
    assert lat[4096][1] > lat[8][1]
    assert lat[4096][256] > 5 * lat[8][256]
    # batching amortises the per-call overhead: a sample costs less at batch 256 than alone
    assert lat[8][256] < lat[8][1]


def test_checkpoint_latency_times_a_saved_network(tmp_path):
    import numpy as np

    from core import checkpoint as C

    e = engine("numpy", 16)
    ckpt = C.Checkpoint(e.get_params(), e.spec, np.zeros(N_IN), np.ones(N_IN), classes=np.arange(10))
    path = C.save(tmp_path / "model.npz", ckpt)
    lat = checkpoint_latency(path, "numpy", repeats=3)
    assert lat[1] > 0 and lat[256] > 0
