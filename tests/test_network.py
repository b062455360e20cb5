"""Whole-network gradients, layout and initialisation."""

from __future__ import annotations

import numpy as np
import pytest

from core import functional as F
from core import network as N
from core.config import ConfigError, LayersConfig, RegularizationConfig
from tests.test_functional import numeric_grad, targets_for


def penalized_loss(params, spec, X, T, l1=0.0, l2=0.0) -> float:
    """Full training objective (mean loss + penalty) with no dropout: what gradients descend."""
    logits, _ = N.forward(params, spec, X)
    return F.loss_value(spec.loss, logits, T) + F.penalty(params, spec.weight_mask(), l1, l2)


def gradient(params, spec, X, T, l1=0.0, l2=0.0) -> np.ndarray:
    """Its gradient through the network's backward pass."""
    logits, cache = N.forward(params, spec, X)
    _, dlogits = F.loss_and_grad(spec.loss, logits, T)
    return N.backward(params, spec, cache, dlogits) + F.penalty_grad(params, spec.weight_mask(), l1, l2)


def make(hidden, act, loss="cross_entropy", n_in=3, n_out=4, dtype="float64", seed=1):
    n_out = 1 if loss == "bce" else n_out
    spec = N.build_spec(LayersConfig(hidden=hidden, activation=act, leaky_slope=0.1), RegularizationConfig(), n_in=n_in, n_out=n_out, loss=loss)
    params = N.init_params(spec, init="xavier", seed=seed, dtype=dtype)
    params[spec.weight_mask() == 0] = np.random.default_rng(seed).normal(size=(~spec.weight_mask()).sum()) * 0.1
    return spec, params


@pytest.mark.parametrize(
    "hidden,act,loss,l1,l2",
    [
        ([], "relu", "cross_entropy", 0.0, 0.0),
        ([5], "tanh", "cross_entropy", 0.0, 0.01),
        ([5, 4], "sigmoid", "bce", 0.01, 0.0),
        ([6, 5, 4], "leaky_relu", "mse", 0.01, 0.02),
        ([4, 4], "relu", "cross_entropy", 0.0, 0.05),
        ([3, 5], "linear", "mse", 0.0, 0.0),
        ([4], "softmax", "cross_entropy", 0.0, 0.0),
    ],
)
def test_network_gradient_matches_central_differences(hidden, act, loss, l1, l2):
    spec, params = make(hidden, act, loss)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(7, spec.n_in))
    T = targets_for(loss, 7, spec.n_out)
    analytic = gradient(params, spec, X, T, l1, l2)
    numeric = numeric_grad(lambda p: penalized_loss(p, spec, X, T, l1, l2), params.copy())
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_dropout_backward_matches_masked_network():
    """With a fixed dropout mask the net is a deterministic function: check its gradient."""
    spec = N.NetworkSpec(3, (N.LayerSpec(6, "tanh", 0.5), N.LayerSpec(2, "softmax")), "cross_entropy")
    params = N.init_params(spec, init="he", seed=3, dtype="float64")
    X = np.random.default_rng(4).normal(size=(5, 3))
    T = targets_for("cross_entropy", 5, 2)
    seed = 11

    def obj(p):
        logits, _ = N.forward(p, spec, X, train=True, rng=np.random.default_rng(seed))
        from core import functional as F

        return F.loss_value("cross_entropy", logits, T)

    logits, cache = N.forward(params, spec, X, train=True, rng=np.random.default_rng(seed))
    from core import functional as F

    _, dlog = F.loss_and_grad("cross_entropy", logits, T)
    analytic = N.backward(params, spec, cache, dlog)
    np.testing.assert_allclose(analytic, numeric_grad(obj, params.copy()), rtol=1e-5, atol=1e-8)
    mask = cache[0][3]
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < (mask == 0).sum() < mask.size


def test_layout_views_share_memory_and_order():
    spec, params = make([5, 3], "relu", n_in=2, n_out=4)
    layers = N.unflatten(params, spec)
    assert [W.shape for W, _ in layers] == [(2, 5), (5, 3), (3, 4)]
    assert spec.n_params == 2 * 5 + 5 + 5 * 3 + 3 + 3 * 4 + 4
    layers[1][0][0, 0] = 123.0
    assert params[2 * 5 + 5] == 123.0
    assert spec.weight_mask().sum() == 10 + 15 + 12


@pytest.mark.parametrize(
    "init,dist,expected_std",
    [
        ("he", "normal", lambda i, o: np.sqrt(2 / i)),
        ("he", "uniform", lambda i, o: np.sqrt(2 / i)),
        ("xavier", "normal", lambda i, o: np.sqrt(2 / (i + o))),
        ("xavier_uniform", "normal", lambda i, o: np.sqrt(2 / (i + o))),
        ("lecun", "normal", lambda i, o: np.sqrt(1 / i)),
        ("random", "normal", lambda i, o: 0.05),
        ("random", "uniform", lambda i, o: 0.05 / np.sqrt(3)),
    ],
)
def test_init_scale(init, dist, expected_std):
    spec = N.NetworkSpec(400, (N.LayerSpec(300, "relu"), N.LayerSpec(10, "softmax")), "cross_entropy")
    params = N.init_params(spec, init=init, distribution=dist, scale=0.05, seed=0, dtype="float64")
    W, b = N.unflatten(params, spec)[0]
    assert W.std() == pytest.approx(expected_std(400, 300), rel=0.02)
    assert abs(W.mean()) < 0.01 * expected_std(400, 300) * 10
    assert np.all(b == 0)
    if dist == "uniform" or init == "xavier_uniform":
        assert np.abs(W).max() <= expected_std(400, 300) * np.sqrt(3) + 1e-12


def test_init_same_weights_across_dtypes():
    spec, _ = make([8], "relu")
    a = N.init_params(spec, seed=5, dtype="float32")
    b = N.init_params(spec, seed=5, dtype="float64")
    assert a.dtype == np.float32 and b.dtype == np.float64
    np.testing.assert_array_equal(a, b.astype(np.float32))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(activation="swish"), "layers.activation"),
        (dict(init="orthogonal"), "layers.init"),
        (dict(hidden=[16, 0]), "layers.hidden[1]"),
    ],
)
def test_bad_layer_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        LayersConfig(**kwargs)


def test_spec_json_round_trip():
    spec, _ = make([5, 3], "leaky_relu", loss="mse")
    assert N.NetworkSpec.from_json(spec.to_json()) == spec
