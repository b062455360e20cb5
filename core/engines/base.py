"""The engine interface: what the trainer needs from a compute backend.

An engine owns the parameters, the optimizer state and the training split for the whole run
(on a GPU they stay on the device); the trainer hands it a batch order and the learning rate
of every step, and gets back only the epoch's metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from .. import functional as F
from ..config import ConfigError, OptimizerConfig, RegularizationConfig
from ..network import NetworkSpec


class Engine(ABC):
    name: ClassVar[str]

    def __init__(
        self,
        spec: NetworkSpec,
        params: np.ndarray,
        optimizer: OptimizerConfig,
        regularization: RegularizationConfig,
        *,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.optimizer = optimizer
        self.regularization = regularization
        self.seed = seed
        self.dtype = params.dtype
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(
                f"trainer.dtype: {self.dtype} is not supported; allowed: float32, float64"
            )

    @abstractmethod
    def set_train_data(self, X: np.ndarray, T: np.ndarray) -> None:
        """Keep the training split (X (n, n_in), targets T (n, n_out)) for the run."""

    @abstractmethod
    def train_epoch(self, order: np.ndarray, lrs: np.ndarray, batch_size: int) -> tuple[float, float]:
        """One pass over ``order`` in minibatches, step i using lrs[i].

        Returns (mean training loss over the samples, training accuracy), both measured on
        the minibatches as they were trained (dropout on). Accuracy is NaN for regression.
        """

    @abstractmethod
    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, n_out) in evaluation mode (no dropout)."""

    @abstractmethod
    def get_params(self) -> np.ndarray:
        """A host copy of the flat parameter vector."""

    @abstractmethod
    def set_params(self, params: np.ndarray) -> None:
        """Replace the parameters (the optimizer state is kept)."""

    def evaluate(self, X: np.ndarray, T: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) in evaluation mode; accuracy is NaN for regression."""
        if len(X) == 0:
            return float("nan"), float("nan")
        logits = self.predict_logits(X)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = F.loss_value(self.spec.loss, logits, T)
        return loss, accuracy(self.spec.loss, logits, T)

    def close(self) -> None:
        """Release device memory or threads (no-op by default)."""


def is_classifier(loss: str, n_out: int) -> bool:
    return not (loss == "mse" and n_out == 1)


def accuracy(loss: str, logits: np.ndarray, T: np.ndarray) -> float:
    if not is_classifier(loss, T.shape[1]) or len(T) == 0:
        return float("nan")
    return F.n_correct(loss, logits, T) / len(T)


def n_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
