"""The engine contract: one battery of tests every engine must pass.

An engine's test module subclasses ``EngineContract`` and overrides the ``engine_name``
fixture (and may shrink ``sizes``). Every check compares against the NumPy reference
engine started from the same weights with the same batch order and learning rates.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import functional as F
from core import network as N
from core.config import OPTIMIZERS, OptimizerConfig, RegularizationConfig
from core.engines import engine_class
from core.engines.numpy_engine import NumpyEngine


def problem(loss: str, *, n: int, n_in: int, n_out: int, seed: int = 0, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)).astype(dtype)
    if loss == "cross_entropy":
        T = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    elif loss == "bce":
        T = rng.integers(0, 2, (n, 1)).astype(dtype)
    else:
        T = rng.normal(size=(n, n_out)).astype(dtype)
    return X, T


def make_pair(name, hidden, act, loss, opt, reg, dtype, n_in, n_out, seed=0):
    n_out = 1 if loss == "bce" else n_out
    layers = tuple(N.LayerSpec(u, act, reg.dropout) for u in hidden)
    spec = N.NetworkSpec(n_in, layers + (N.LayerSpec(n_out, F.OUTPUT_ACTIVATION[loss]),), loss, 0.1)
    params = N.init_params(spec, init="xavier", seed=seed, dtype=dtype)
    engine = engine_class(name)(spec, params, opt, reg, seed=seed)
    ref = NumpyEngine(spec, params, opt, reg, seed=seed)
    return spec, params, engine, ref


class EngineContract:
    # (rows, n_in, hidden, n_out, batch): ragged on purpose, nothing a multiple of a tile
    sizes = (37, 5, (7, 6), 3, 8)
    epochs = 2
    rtol32 = 2e-4

    @pytest.fixture
    def engine_name(self) -> str:
        raise NotImplementedError

    def tol(self, dtype):
        return dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=self.rtol32, atol=self.rtol32)

    def train_both(self, engine_name, *, opt, reg=None, act="tanh", loss="cross_entropy", dtype="float64", epochs=None, seed=0):
        reg = reg or RegularizationConfig()
        n, n_in, hidden, n_out, batch = self.sizes
        spec, params, engine, ref = make_pair(engine_name, hidden, act, loss, opt, reg, dtype, n_in, n_out, seed)
        X, T = problem(loss, n=n, n_in=n_in, n_out=spec.n_out, seed=seed, dtype=dtype)
        engine.set_train_data(X, T)
        ref.set_train_data(X, T)
        rng = np.random.default_rng(1)
        steps = -(-n // batch)
        out = []
        for epoch in range(epochs or self.epochs):
            order = rng.permutation(n)
            lrs = np.linspace(opt.lr, opt.lr * 0.5, steps)
            out.append((engine.train_epoch(order, lrs, batch), ref.train_epoch(order, lrs, batch)))
        return engine, ref, out, (X, T)

    @pytest.mark.parametrize("opt_name", OPTIMIZERS)
    def test_same_weights_as_reference_for_every_optimizer(self, engine_name, opt_name):
        opt = OptimizerConfig(name=opt_name, lr=0.05, weight_decay=0.1 if opt_name == "adamw" else 0.0)
        engine, ref, metrics, _ = self.train_both(engine_name, opt=opt)
        np.testing.assert_allclose(engine.get_params(), ref.get_params(), **self.tol("float64"))
        for (loss_e, acc_e), (loss_r, acc_r) in metrics:
            assert loss_e == pytest.approx(loss_r, rel=1e-9)
            assert acc_e == pytest.approx(acc_r)

    @pytest.mark.parametrize(
        "act,loss", [("relu", "cross_entropy"), ("leaky_relu", "mse"), ("sigmoid", "bce"), ("linear", "mse"), ("tanh", "cross_entropy")]
    )
    def test_same_weights_for_activations_and_losses(self, engine_name, act, loss):
        engine, ref, _, _ = self.train_both(engine_name, opt=OptimizerConfig(name="momentum", lr=0.05), act=act, loss=loss)
        np.testing.assert_allclose(engine.get_params(), ref.get_params(), **self.tol("float64"))

    def test_l1_l2_and_clipping(self, engine_name):
        opt = OptimizerConfig(name="sgd", lr=0.1, clip_norm=0.5)
        reg = RegularizationConfig(l1=0.01, l2=0.05)
        engine, ref, _, _ = self.train_both(engine_name, opt=opt, reg=reg)
        np.testing.assert_allclose(engine.get_params(), ref.get_params(), **self.tol("float64"))

    def test_float32_close_to_reference(self, engine_name):
        engine, ref, _, _ = self.train_both(engine_name, opt=OptimizerConfig(name="adam", lr=0.01), dtype="float32")
        p = engine.get_params()
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, ref.get_params(), **self.tol("float32"))

    def test_predict_and_evaluate_match_reference(self, engine_name):
        engine, ref, _, (X, T) = self.train_both(engine_name, opt=OptimizerConfig(name="sgd", lr=0.1), epochs=1)
        np.testing.assert_allclose(engine.predict_logits(X), ref.predict_logits(X), **self.tol("float64"))
        le, ae = engine.evaluate(X, T)
        lr_, ar = ref.evaluate(X, T)
        assert le == pytest.approx(lr_, rel=1e-9) and ae == pytest.approx(ar)

    def test_set_params_round_trip(self, engine_name):
        engine, _, _, (X, _) = self.train_both(engine_name, opt=OptimizerConfig(name="sgd", lr=0.1), epochs=1)
        new = np.random.default_rng(5).normal(size=engine.get_params().size)
        engine.set_params(new)
        np.testing.assert_array_equal(engine.get_params(), new)
        np.testing.assert_allclose(engine.predict_logits(X), N.predict_logits(new, engine.spec, X), **self.tol("float64"))

    def test_dropout_reproducible_by_seed(self, engine_name):
        opt = OptimizerConfig(name="sgd", lr=0.1)
        reg = RegularizationConfig(dropout=0.4)
        a, _, _, _ = self.train_both(engine_name, opt=opt, reg=reg, seed=3)
        b, _, _, _ = self.train_both(engine_name, opt=opt, reg=reg, seed=3)
        c, _, _, _ = self.train_both(engine_name, opt=opt, reg=reg, seed=4)
        np.testing.assert_array_equal(a.get_params(), b.get_params())
        # a different seed means other initial weights and other masks
        assert not np.allclose(a.get_params(), c.get_params())

    def test_dropout_changes_training_but_not_prediction(self, engine_name):
        opt = OptimizerConfig(name="sgd", lr=0.1)
        with_do, _, _, (X, _) = self.train_both(engine_name, opt=opt, reg=RegularizationConfig(dropout=0.5), epochs=1)
        without, _, _, _ = self.train_both(engine_name, opt=opt, epochs=1)
        assert not np.allclose(with_do.get_params(), without.get_params())
        p = with_do.get_params()
        np.testing.assert_allclose(with_do.predict_logits(X), N.predict_logits(p, with_do.spec, X), **self.tol("float64"))
