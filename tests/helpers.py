"""Small configs shared by the tests."""

from __future__ import annotations

from core.config import (
    DataConfig,
    EarlyStoppingConfig,
    EngineConfig,
    ExperimentConfig,
    LayersConfig,
    OptimizerConfig,
    RegularizationConfig,
    SchedulerConfig,
    TrainerConfig,
)


def tiny_config(
    *,
    data: str = "moons",
    hidden=(8,),
    epochs: int = 5,
    batch_size: int = 16,
    optimizer: str = "adam",
    lr: float = 0.01,
    engine: str = "numpy",
    early_stopping: bool = False,
    **sections,
) -> ExperimentConfig:
    cfg = ExperimentConfig(
        data=DataConfig(name=data, n_samples=200, noise=0.2),
        layers=LayersConfig(hidden=list(hidden), activation="tanh"),
        optimizer=OptimizerConfig(name=optimizer, lr=lr),
        scheduler=SchedulerConfig(),
        regularization=RegularizationConfig(),
        engine=EngineConfig(name=engine),
        trainer=TrainerConfig(
            epochs=epochs, batch_size=batch_size, early_stopping=EarlyStoppingConfig(enabled=early_stopping)
        ),
    )
    for name, value in sections.items():
        setattr(cfg, name, value)
    return cfg
