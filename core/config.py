"""Typed experiment configuration: one dataclass per config group.

These dataclasses are the single source of truth for option names, defaults and valid
ranges. The core receives them directly; the Hydra app registers the very same classes in
its ConfigStore (``app/compose.py``), so a wrong type or unknown key fails at compose time
and an out-of-range value fails in ``__post_init__`` with the field's dotted name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "linear", "softmax")
INITS = ("random", "he", "xavier", "xavier_uniform", "lecun")
DISTRIBUTIONS = ("normal", "uniform")
LOSSES = ("auto", "cross_entropy", "bce", "mse")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULERS = ("constant", "step", "exponential", "cosine", "cyclic", "plateau")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
DATASETS = ("digits", "moons", "circles", "blobs", "spirals", "xor", "file")
TASKS = ("auto", "classification", "regression")
ENGINES = ("auto", "cpu", "numpy", "cuda")
DTYPES = ("float32", "float64")
SEED_MAX = 2**32 - 1  # NumPy's legacy seeding and scikit-learn's random_state take 32 bits
MODES = ("auto", "min", "max")
METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
# the integer codes the compiled engines branch on: the position in the tuples above, the
# one source for the NumPy, CPU and CUDA engines alike
ACTIVATION_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
LOSS_CODES = {name: i for i, name in enumerate(LOSSES)}
OPTIMIZER_CODES = {name: i for i, name in enumerate(OPTIMIZERS)}


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and what is allowed."""


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def check_range(
    name: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a finite number with ``low (<|<=) value (<|<=) high``.

    NaN and +-inf are refused for every field, bounded or not: no setting means "infinite".
    """
    if value is None:
        if optional:
            return
        raise ConfigError(f"{name}: a value is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    finite = isinstance(value, int) or math.isfinite(value)  # a big int overflows isfinite
    bad = not finite
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        allowed = f"{lo}{name}{hi}" if lo or hi else "a finite number"
        what = "is out of range" if finite else "is not a finite number"
        raise ConfigError(f"{name}: {value!r} {what}; allowed: {allowed}")


@dataclass
class DataConfig:
    name: str = "digits"
    task: str = "auto"  # auto: regression only for a float target in a file
    n_samples: int = 2000  # generated sets only
    noise: float = 0.2
    n_classes: int = 3  # blobs and spirals
    n_features: int = 2  # blobs
    path: Optional[str] = None  # data=file: an .npz (X, y) or .csv file
    label: str = "label"  # csv column holding the target
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    standardize: bool = True  # fitted on the training split only
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASETS)
        check_choice("data.task", self.task, TASKS)
        check_range("data.n_samples", self.n_samples, low=8)
        check_range("data.noise", self.noise, low=0.0)
        check_range("data.n_classes", self.n_classes, low=2)
        check_range("data.n_features", self.n_features, low=1)
        check_range("data.seed", self.seed, low=0, high=SEED_MAX)
        check_range("data.val_fraction", self.val_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("data.test_fraction", self.test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                "data.val_fraction + data.test_fraction: must be < 1 to leave a training split"
            )
        if self.name == "file" and not self.path:
            raise ConfigError("data.path: required with data.name=file (an .npz or .csv file)")


@dataclass
class LayersConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    activation: str = "relu"
    leaky_slope: float = 0.01  # leaky_relu only
    init: str = "he"
    distribution: str = "normal"  # he/lecun/random: normal or uniform; xavier is normal
    init_scale: float = 0.01  # init=random: std (normal) or half-width (uniform)

    def __post_init__(self) -> None:
        # hidden=[] is allowed: a linear/softmax model
        for i, units in enumerate(self.hidden):
            check_range(f"layers.hidden[{i}]", units, low=1)
        check_choice("layers.activation", self.activation, ACTIVATIONS)
        check_range("layers.leaky_slope", self.leaky_slope, low=0.0, high=1.0, high_open=True)
        check_choice("layers.init", self.init, INITS)
        check_choice("layers.distribution", self.distribution, DISTRIBUTIONS)
        check_range("layers.init_scale", self.init_scale, low=0.0, low_open=True)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # momentum, nesterov
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw
    alpha: float = 0.99  # rmsprop: decay of the squared-gradient average
    eps: float = 1e-8
    weight_decay: float = 0.0  # adamw: decoupled decay (lr * wd * W); others use regularization.l2
    clip_norm: Optional[float] = None  # clip gradients to this global L2 norm

    def __post_init__(self) -> None:
        check_choice("optimizer.name", self.name, OPTIMIZERS)
        check_range("optimizer.lr", self.lr, low=0.0, low_open=True)
        check_range("optimizer.momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_range("optimizer.beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        check_range("optimizer.beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        check_range("optimizer.alpha", self.alpha, low=0.0, high=1.0, high_open=True)
        check_range("optimizer.eps", self.eps, low=0.0, low_open=True)
        check_range("optimizer.weight_decay", self.weight_decay, low=0.0)
        check_range("optimizer.clip_norm", self.clip_norm, low=0.0, low_open=True, optional=True)


@dataclass
class SchedulerConfig:
    """Learning-rate schedule. Time is measured in epochs (fractional inside an epoch)."""

    name: str = "constant"
    warmup_epochs: float = 0.0  # linear warmup in front of any schedule
    warmup_start: float = 0.0  # warmup starts at warmup_start * lr
    # step / exponential / cyclic exp_range
    step_size: float = 10.0  # step: epochs between decays; cyclic: epochs per half cycle
    gamma: float = 0.5  # step: factor per step; exponential / exp_range: factor per epoch
    # cosine
    t_max: Optional[float] = None  # epochs of one cosine decay; None: the whole run
    t_0: Optional[float] = None  # warm restarts: first period in epochs (overrides t_max)
    t_mult: float = 1.0  # warm restarts: period multiplier
    eta_min: float = 0.0  # cosine floor; cyclic and plateau use their own
    # cyclic
    max_lr: float = 1e-2  # cyclic: peak; optimizer.lr is the base
    mode: str = "triangular"
    # plateau
    monitor: str = "val_loss"
    plateau_mode: str = "auto"  # auto: max for accuracy, min for loss
    factor: float = 0.5
    patience: int = 5
    threshold: float = 1e-4  # relative improvement needed
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        check_choice("scheduler.name", self.name, SCHEDULERS)
        check_range("scheduler.warmup_epochs", self.warmup_epochs, low=0.0)
        check_range("scheduler.warmup_start", self.warmup_start, low=0.0, high=1.0)
        check_range("scheduler.step_size", self.step_size, low=0.0, low_open=True)
        check_range("scheduler.gamma", self.gamma, low=0.0, high=1.0, low_open=True)
        check_range("scheduler.t_max", self.t_max, low=0.0, low_open=True, optional=True)
        check_range("scheduler.t_0", self.t_0, low=0.0, low_open=True, optional=True)
        check_range("scheduler.t_mult", self.t_mult, low=1.0)
        check_range("scheduler.eta_min", self.eta_min, low=0.0)
        check_range("scheduler.max_lr", self.max_lr, low=0.0, low_open=True)
        check_choice("scheduler.mode", self.mode, CYCLIC_MODES)
        check_choice("scheduler.monitor", self.monitor, METRICS)
        check_choice("scheduler.plateau_mode", self.plateau_mode, MODES)
        check_range("scheduler.factor", self.factor, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("scheduler.patience", self.patience, low=0)
        check_range("scheduler.threshold", self.threshold, low=0.0)
        check_range("scheduler.cooldown", self.cooldown, low=0)
        check_range("scheduler.min_lr", self.min_lr, low=0.0)


@dataclass
class RegularizationConfig:
    l1: float = 0.0  # adds l1 * sum|W| (weights only, not biases)
    l2: float = 0.0  # adds l2/2 * sum W^2, i.e. gradient l2 * W (PyTorch's weight_decay)
    dropout: float = 0.0  # inverted dropout on every hidden layer

    def __post_init__(self) -> None:
        check_range("regularization.l1", self.l1, low=0.0)
        check_range("regularization.l2", self.l2, low=0.0)
        check_range("regularization.dropout", self.dropout, low=0.0, high=1.0, high_open=True)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = "val_loss"
    mode: str = "auto"  # auto: max for accuracy, min for loss
    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        check_choice("trainer.early_stopping.monitor", self.monitor, METRICS)
        check_choice("trainer.early_stopping.mode", self.mode, MODES)
        check_range("trainer.early_stopping.patience", self.patience, low=0)
        check_range("trainer.early_stopping.min_delta", self.min_delta, low=0.0)


@dataclass
class TrainerConfig:
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    dtype: str = "float32"
    loss: str = "auto"  # auto: cross_entropy for classes, mse for regression
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def __post_init__(self) -> None:
        check_range("trainer.epochs", self.epochs, low=1)
        check_range("trainer.batch_size", self.batch_size, low=1)
        check_range("trainer.seed", self.seed, low=0, high=SEED_MAX)
        check_choice("trainer.dtype", self.dtype, DTYPES)
        check_choice("trainer.loss", self.loss, LOSSES)


@dataclass
class EngineConfig:
    name: str = "auto"  # auto: cuda when numba.cuda.is_available(), else cpu
    device: Optional[int] = None  # cuda: device index; None: the worker's own or 0
    threads: Optional[int] = None  # BLAS threads; None: leave as is

    def __post_init__(self) -> None:
        check_choice("engine.name", self.name, ENGINES)
        check_range("engine.device", self.device, low=0, optional=True)
        check_range("engine.threads", self.threads, low=1, optional=True)


@dataclass
class ViewConfig:
    """What a single run shows while it trains (the entry point reads it; core ignores it)."""

    progress: bool = True  # terminal progress line: epoch, loss, val accuracy, lr, ETA
    live_plot: bool = True  # redraw curves.png in the run folder while training
    interactive: bool = False  # a matplotlib window (needs a display)


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    # what run.py returns to a Hydra sweeper: a metric of the run's summary (val_accuracy,
    # val_loss, train_loss, train_accuracy); None: val_accuracy, or val_loss for regression
    optimized_metric: Optional[str] = None

    def __post_init__(self) -> None:
        if self.optimized_metric is not None:
            check_choice("optimized_metric", self.optimized_metric, METRICS)
