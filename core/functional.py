"""Pure NumPy maths of the network: activations, losses, penalties (the reference).

Every function here is a plain function of arrays; engines may fuse or compile the same
formulas, and the contract tests compare them against these.
Targets are always a dense float matrix T of shape (n, n_out): one-hot rows for
cross-entropy, 0/1 in one column for binary cross-entropy, real values for MSE.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- activations


def activate(name: str, z: np.ndarray, slope: float = 0.01) -> np.ndarray:
    """Apply activation ``name`` to pre-activations z (batch, units)."""
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, z * z.dtype.type(slope))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "linear":
        return z
    if name == "softmax":
        return softmax(z)
    raise ValueError(f"activation: unknown {name!r}")


def activation_backward(
    name: str, z: np.ndarray, a: np.ndarray, da: np.ndarray, slope: float = 0.01
) -> np.ndarray:
    """dL/dz given dL/da, the pre-activation z and the activation a = f(z)."""
    if name == "relu":
        return da * (z > 0)
    if name == "leaky_relu":
        return np.where(z > 0, da, da * da.dtype.type(slope))
    if name == "sigmoid":
        return da * a * (1 - a)
    if name == "tanh":
        return da * (1 - a * a)
    if name == "linear":
        return da
    if name == "softmax":  # Jacobian-vector product of softmax, row by row
        return a * (da - np.sum(da * a, axis=1, keepdims=True))
    raise ValueError(f"activation: unknown {name!r}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------- losses on logits

OUTPUT_ACTIVATION = {"cross_entropy": "softmax", "bce": "sigmoid", "mse": "linear"}


def loss_and_grad(loss: str, logits: np.ndarray, T: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and its gradient with respect to the logits (n, k).

    The output activation is fused into the loss, so the gradient is the stable
    (p - T) / n for softmax cross-entropy and sigmoid binary cross-entropy.
    """
    n, k = logits.shape
    if loss == "cross_entropy":
        logp = log_softmax(logits)
        value = -np.sum(T * logp) / n
        grad = (np.exp(logp) - T) / n
    elif loss == "bce":
        # log(1 + exp(z)) - t z, written to never overflow
        value = np.sum(np.maximum(logits, 0) - logits * T + np.log1p(np.exp(-np.abs(logits)))) / n
        grad = (sigmoid(logits) - T) / n
    elif loss == "mse":
        diff = logits - T
        value = np.sum(diff * diff) / (n * k)
        grad = 2 * diff / (n * k)
    else:
        raise ValueError(f"trainer.loss: unknown {loss!r}")
    return float(value), grad.astype(logits.dtype, copy=False)


def loss_value(loss: str, logits: np.ndarray, T: np.ndarray) -> float:
    return loss_and_grad(loss, logits, T)[0]


def output(loss: str, logits: np.ndarray) -> np.ndarray:
    """Network output for prediction: probabilities or regression values."""
    return activate(OUTPUT_ACTIVATION[loss], logits)


def n_correct(loss: str, logits: np.ndarray, T: np.ndarray) -> int:
    """Correctly classified rows (regression has no accuracy: returns 0)."""
    if loss == "bce":
        return int(np.sum((logits[:, 0] > 0) == (T[:, 0] > 0.5)))
    if loss == "mse" and T.shape[1] == 1:
        return 0
    return int(np.sum(np.argmax(logits, axis=1) == np.argmax(T, axis=1)))


# ---------------------------------------------------------------- penalties


def penalty(params: np.ndarray, weight_mask: np.ndarray, l1: float, l2: float) -> float:
    """l1 * sum|W| + l2/2 * sum W^2 over weights (biases are not penalised)."""
    w = params[weight_mask]
    return float(l1 * np.sum(np.abs(w)) + 0.5 * l2 * np.sum(w * w))


def penalty_grad(params: np.ndarray, weight_mask: np.ndarray, l1: float, l2: float) -> np.ndarray:
    return (l1 * np.sign(params) + l2 * params) * weight_mask
