"""``hydra/sweeper=nnsweep``: nnsweep's Optuna study as a Hydra sweeper.

Hydra finds plugins only in the ``hydra_plugins`` namespace package, so this file is all
that lives here: the config schema Hydra validates ``hydra.sweeper`` against, and a Sweeper
that hands ``setup``/``sweep`` to ``sweeper.hydra_sweeper`` (imported lazily: Optuna is
slow to import, and ``run.py --help`` should not pay for it). The study code is the same
one ``search.py`` runs. (No ``from __future__ import annotations`` here: Hydra executes
plugin modules outside sys.modules, where dataclasses cannot resolve string annotations.)
"""


from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class NnsweepSweeperConf:
    _target_: str = "hydra_plugins.nnsweep_sweeper.nnsweep_sweeper.NnsweepSweeper"
    n_trials: int = 20  # target total of finished trials in the study (resume: only what is missing)
    n_jobs: int = 1  # trials launched at a time (parallel under a parallel launcher, e.g. joblib)
    study_name: Optional[str] = None  # default: the hparams_search option's name, else "hydra"
    storage: Optional[str] = None  # Optuna URL; default $NNSWEEP_STORAGE, else <root>/<study>/journal.log
    root: str = "outputs/studies"  # where studies keep trials.csv, plots/, best/, summary.json
    sampler: str = "tpe"  # tpe | random | cmaes | qmc | grid
    pruner: str = "median"  # none | median | percentile | hyperband | halving
    metric: str = "val_accuracy"  # or several objectives: val_accuracy:max,n_params:min
    direction: Optional[str] = None  # one metric only; default: maximize for accuracy, else minimize
    constraints: List[str] = field(default_factory=list)  # e.g. [n_params<=20000]
    seed: int = 0
    cv: Any = "auto"  # folds per trial: auto (hold-out + finalists on small data) | 1 (hold-out) | K
    finalists: Any = "auto"  # best hold-out trials trained again with finalist_folds folds: auto | N
    finalist_folds: int = 5
    timeout: Optional[float] = None  # seconds after which no new trial starts
    allow_changes: bool = False  # resume although the space, metric, overrides or cv changed
    plots: bool = True
    params: Dict[str, Any] = field(default_factory=dict)  # key: sweep-grammar expression
    layers: Optional[Dict[str, Any]] = None  # {depth: ..., units: ...}: a conditional architecture


ConfigStore.instance().store(group="hydra/sweeper", name="nnsweep", node=NnsweepSweeperConf,
                             provider="nnsweep")


class NnsweepSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        from sweeper.hydra_sweeper import HydraStudy

        self._impl = HydraStudy(**conf)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self._impl.sweep(arguments)
