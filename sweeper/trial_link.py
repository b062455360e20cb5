"""A Hydra job's side of a trial claimed by the nnsweep sweeper (sweeper.hydra_sweeper).

The sweeper puts ``NNSWEEP_TRIAL`` into the job's environment: where the study is and which
trial the job is. The job (run.py) opens the storage, reports its validation metric every
epoch, asks the study's pruner whether to stop (the pruner's public ``prune(study, trial)``),
and writes the trial's ``run`` attr at its end; the sweeper tells the study the outcome.
Nothing but the storage is shared, so this works under any launcher.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

from .claim import worker_id
from .objective import RUN_KEYS


class TrialLink:
    ENV = "NNSWEEP_TRIAL"

    def __init__(self, storage: str | None, study_dir: str | Path, study: str, number: int,
                 metric: str, pruner: str, cv: int, *, overrides: list[str] | None = None) -> None:
        self.storage, self.study_dir, self.study_name = storage, str(Path(study_dir).resolve()), study
        self.number, self.metric, self.pruner_name, self.cv = number, metric, pruner, cv
        self.overrides = list(overrides or [])
        self.info: dict[str, Any] = {}

    def encode(self) -> str:
        """The link as one token safe in a Hydra override and an environment variable."""
        data = {k: getattr(self, k) for k in ("storage", "study_dir", "study_name", "number",
                                              "metric", "pruner_name", "cv", "overrides")}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    @classmethod
    def from_env(cls) -> TrialLink | None:
        token = os.environ.get(cls.ENV)
        if not token:
            return None
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        link = cls(data["storage"], data["study_dir"], data["study_name"], data["number"],
                   data["metric"], data["pruner_name"], data["cv"], overrides=data["overrides"])
        link.open()
        return link

    def open(self) -> None:
        import optuna

        from .settings import make_pruner
        from .storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage_obj = open_storage(self.storage, Path(self.study_dir))
        self.study = optuna.load_study(study_name=self.study_name, storage=self.storage_obj,
                                       pruner=make_pruner(self.pruner_name))
        study_id = self.storage_obj.get_study_id_from_name(self.study_name)
        self.trial_id = self.storage_obj.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.storage_obj.set_trial_user_attr(self.trial_id, "worker", worker_id())

    def report(self, row: dict) -> str | None:
        """Trainer callback: one intermediate value per epoch; 'pruned' when the pruner says."""
        value = row[self.metric]
        if not math.isfinite(value):
            return None  # the trainer stops a diverged run itself
        self.storage_obj.set_trial_intermediate_value(self.trial_id, row["epoch"], value)
        if self.study.pruner.prune(self.study, self.storage_obj.get_trial(self.trial_id)):
            self.info["pruned_at"] = row["epoch"]
            return "pruned"
        return None

    def finish(self, summary: dict | None = None, out_dir: str | Path | None = None,
               fail_reason: str | None = None) -> None:
        """Write the trial's ``run`` attr: what the tables need, as search.py's trials do."""
        info = {**self.info, "overrides": self.overrides}
        if out_dir is not None:
            info["dir"] = str(out_dir)
        if summary is not None:
            info.update({k: summary.get(k) for k in RUN_KEYS})
        if fail_reason:
            info["fail_reason"] = fail_reason[:1000]
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in info.items()}
        self.storage_obj.set_trial_user_attr(self.trial_id, "run", clean)
