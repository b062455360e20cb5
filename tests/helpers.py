"""Small configs shared by the tests, and the scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


ROOT = Path(__file__).resolve().parents[1]  # the repository


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (scripts/ is not a package), loaded from its file as
    ``python scripts/<name>.py`` would run it."""
    module_name = f"nnsweep_script_{name}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
