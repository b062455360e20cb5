"""Network spec, parameter layout and the reference forward/backward pass.

All parameters live in one flat contiguous vector ``[W1, b1, W2, b2, ...]`` (each W row-major,
shape (n_in, n_out)); per-layer arrays are views into it. Optimizers, clipping and
penalties then act on one array, on every engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from . import functional as F
from .config import (
    ACTIVATIONS,
    DISTRIBUTIONS,
    INITS,
    LOSSES,
    ConfigError,
    LayersConfig,
    RegularizationConfig,
    check_choice,
    check_range,
)


@dataclass(frozen=True)
class LayerSpec:
    units: int
    activation: str
    dropout: float = 0.0  # inverted dropout applied to this layer's output while training


@dataclass(frozen=True)
class NetworkSpec:
    n_in: int
    layers: tuple[LayerSpec, ...]  # hidden layers then the output layer (its logits)
    loss: str  # cross_entropy | bce | mse; fixes the output activation
    leaky_slope: float = 0.01

    def __post_init__(self) -> None:
        check_range("network.n_in", self.n_in, low=1)
        check_choice("trainer.loss", self.loss, LOSSES[1:])
        if not self.layers:
            raise ConfigError("network.layers: needs at least the output layer")
        for i, layer in enumerate(self.layers):
            check_range(f"network.layers[{i}].units", layer.units, low=1)
            check_choice(f"network.layers[{i}].activation", layer.activation, ACTIVATIONS)
            check_range(f"network.layers[{i}].dropout", layer.dropout, low=0.0, high=1.0, high_open=True)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        sizes = [self.n_in] + [layer.units for layer in self.layers]
        return list(zip(sizes[:-1], sizes[1:]))

    @property
    def n_out(self) -> int:
        return self.layers[-1].units

    @property
    def offsets(self) -> list[tuple[int, int, int]]:
        """(W offset, b offset, end) of every layer in the flat vector."""
        out, pos = [], 0
        for n_in, n_out in self.shapes:
            out.append((pos, pos + n_in * n_out, pos + n_in * n_out + n_out))
            pos += n_in * n_out + n_out
        return out

    @property
    def n_params(self) -> int:
        return self.offsets[-1][2]

    def weight_mask(self) -> np.ndarray:
        """Boolean (n_params,): True on weights, False on biases."""
        mask = np.zeros(self.n_params, dtype=bool)
        for w, b, _ in self.offsets:
            mask[w:b] = True
        return mask

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> NetworkSpec:
        d = json.loads(text)
        return cls(
            n_in=int(d["n_in"]),
            layers=tuple(LayerSpec(**layer) for layer in d["layers"]),
            loss=d["loss"],
            leaky_slope=float(d.get("leaky_slope", 0.01)),
        )


def build_spec(
    layers: LayersConfig, reg: RegularizationConfig, *, n_in: int, n_out: int, loss: str
) -> NetworkSpec:
    hidden = tuple(LayerSpec(int(u), layers.activation, reg.dropout) for u in layers.hidden)
    output = LayerSpec(n_out, F.OUTPUT_ACTIVATION[loss], 0.0)
    return NetworkSpec(n_in, hidden + (output,), loss, layers.leaky_slope)


def unflatten(params: np.ndarray, spec: NetworkSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views (W (n_in, n_out), b (n_out,)) into the flat vector, no copies."""
    return [
        (params[w:b].reshape(n_in, n_out), params[b:end])
        for (w, b, end), (n_in, n_out) in zip(spec.offsets, spec.shapes)
    ]


def init_params(
    spec: NetworkSpec,
    *,
    init: str = "he",
    distribution: str = "normal",
    scale: float = 0.01,
    seed: int = 0,
    dtype: str | np.dtype = "float32",
) -> np.ndarray:
    """Initial flat parameter vector; biases are zero. Drawn in float64, then cast, so the
    float32 and float64 nets of one seed start from the same weights."""
    check_choice("layers.init", init, INITS)
    check_choice("layers.distribution", distribution, DISTRIBUTIONS)
    rng = np.random.default_rng(seed)
    params = np.zeros(spec.n_params, dtype=np.float64)
    for (w, b, _), (fan_in, fan_out) in zip(spec.offsets, spec.shapes):
        uniform = distribution == "uniform" or init == "xavier_uniform"
        if init == "random":
            std = scale
        elif init == "he":
            std = np.sqrt(2.0 / fan_in)
        elif init == "lecun":
            std = np.sqrt(1.0 / fan_in)
        else:  # xavier / xavier_uniform (Glorot's "normalized" init)
            std = np.sqrt(2.0 / (fan_in + fan_out))
        # drawn into place: the values of rng.uniform(-a, a) (-a + 2a * u) and rng.normal(0,
        # std) (0 + std * z) from the same stream, without their temporaries (~2 of 4 ms
        # for the 170k weights of a 64-345-422-10 net)
        W = params[w:b]
        if uniform:
            # U(-a, a) has std a / sqrt(3); init=random uses scale as the half-width
            limit = scale if init == "random" else std * np.sqrt(3.0)
            rng.random(out=W)
            W *= limit - -limit
            W += -limit
        else:
            rng.standard_normal(out=W)
            W *= std
    return params.astype(dtype)


def forward(
    params: np.ndarray,
    spec: NetworkSpec,
    X: np.ndarray,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, list]:
    """Logits (n, n_out) and the cache the backward pass needs."""
    a = X
    cache = []
    layers = unflatten(params, spec)
    for i, ((W, b), layer) in enumerate(zip(layers, spec.layers)):
        z = a @ W + b  # (n, n_out)
        last = i == len(layers) - 1
        out = z if last else F.activate(layer.activation, z, spec.leaky_slope)
        mask = None
        if train and layer.dropout > 0 and not last:
            keep = 1.0 - layer.dropout
            mask = (rng.random(out.shape) < keep).astype(out.dtype) / out.dtype.type(keep)
            out = out * mask
        cache.append((a, z, out, mask))
        a = out
    return a, cache


def backward(
    params: np.ndarray, spec: NetworkSpec, cache: list, dlogits: np.ndarray
) -> np.ndarray:
    """Flat gradient of the loss given dL/dlogits, through the cached forward pass."""
    grad = np.empty_like(params)
    layers = unflatten(params, spec)
    grads = unflatten(grad, spec)
    dz = dlogits
    for i in range(len(layers) - 1, -1, -1):
        a_prev, _, _, _ = cache[i]
        W, _ = layers[i]
        dW, db = grads[i]
        dW[...] = a_prev.T @ dz
        db[...] = dz.sum(axis=0)
        if i == 0:
            break
        da = dz @ W.T  # (n, n_in of layer i) = gradient w.r.t. layer i-1's output
        _, z_prev, out_prev, mask_prev = cache[i - 1]
        if mask_prev is not None:
            da = da * mask_prev
            act = F.activate(spec.layers[i - 1].activation, z_prev, spec.leaky_slope)
        else:
            act = out_prev
        dz = F.activation_backward(spec.layers[i - 1].activation, z_prev, act, da, spec.leaky_slope)
    return grad


def predict_logits(params: np.ndarray, spec: NetworkSpec, X: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Logits in evaluation mode (no dropout), in chunks to bound memory."""
    parts = [forward(params, spec, X[i : i + chunk])[0] for i in range(0, len(X), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, spec.n_out), params.dtype)
