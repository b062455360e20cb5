"""``hydra/sweeper=nnsweep``: the study of search.py, with Hydra launching the trials.

    python run.py -m hparams_search=default                 # = python search.py --trials 200
    python run.py -m hparams_search=quick hydra.sweeper.n_trials=50 data.seed=1
    python run.py -m hparams_search=lr 'optimizer=momentum,adam'   # a list joins the params

One study implementation, two front ends: the same StudySettings, claims (exact totals,
resume, dead trials re-queued), trial attrs, report (trials.csv, epochs.csv, plots/, best/,
baseline/, summary.json) and study folder as search.py. What differs is who trains a trial:
here a Hydra job of run.py, launched by the configured launcher (in this process, or in
joblib workers, or elsewhere).

How a job's per-epoch values reach the study: the sweeper claims a trial and launches its
job with ``NNSWEEP_TRIAL`` in the job's environment (``hydra.job.env_set``), naming the
storage, the study and the trial number (sweeper.trial_link). The job opens the storage
itself, reports its validation metric every epoch and asks the study's pruner whether to
stop, exactly as a search.py trial does, and writes the trial's ``run`` attr at its end; the
sweeper then tells the study how the job ended. So pruning works under any launcher whose
jobs can reach the storage. A job that fails is a FAIL trial; the sweep goes on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("nnsweep.sweeper")


def split_arguments(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    """Command-line task overrides -> (sweep params in the grammar, fixed overrides).
    ``a=x,y`` (a plain list) becomes ``choice(x, y)``; choice/range/interval stay as written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            text = override.input_line.split("=", 1)[1]
            if override.is_discrete_sweep() and not text.lstrip().startswith(("choice", "range")):
                text = f"choice({text})"
            params[override.get_key_element()] = text
        else:
            fixed.append(override.input_line)
    return params, fixed


class HydraStudy:
    def __init__(self, **conf: Any) -> None:
        from omegaconf import OmegaConf

        self.conf = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in conf.items()}

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def settings(self, arguments: list[str]):
        """StudySettings as search.py would build them for the same space and overrides."""
        import os

        from .objectives import Goal, parse_constraints, parse_goals
        from .settings import StudySettings, plan_cv
        from .space import SPACES_GROUP, parse_space

        c = self.conf
        params, fixed = split_arguments(arguments)
        choice = self.config.hydra.runtime.choices.get(SPACES_GROUP)
        space = parse_space({"params": {**c.get("params", {}), **params}, "layers": c.get("layers"),
                             "metric": c.get("metric"), "direction": c.get("direction")},
                            source=f"hydra.sweeper ({SPACES_GROUP}={choice})")
        # the search's own option composes every trial, as search.py --space <choice> does
        space.overrides = [a for a in fixed if a.split("=", 1)[0] == SPACES_GROUP]
        fixed = [a for a in fixed if a not in space.overrides]
        if choice and not space.overrides:
            space.overrides = [f"{SPACES_GROUP}={choice}"]
        spec = c.get("metric") or "val_accuracy"
        goals = parse_goals(spec, "hydra.sweeper.metric")  # each of several has its direction
        if len(goals) == 1 and ":" not in str(spec) and c.get("direction"):
            goals = (Goal(goals[0].name, c["direction"]),)
        metric, direction = goals[0].name, goals[0].direction
        settings = StudySettings(
            name=c.get("study_name") or choice or "hydra", space=space,
            trials=int(c.get("n_trials", 20)), root=Path(c.get("root", "outputs/studies")),
            storage=c.get("storage") or os.environ.get("NNSWEEP_STORAGE"),
            jobs=int(c.get("n_jobs", 1)), timeout=c.get("timeout"), seed=int(c.get("seed", 0)),
            metric=metric, direction=direction, sampler=c.get("sampler", "tpe"),
            pruner=c.get("pruner", "median"), overrides=fixed,
            allow_changes=bool(c.get("allow_changes", False)), goals=goals,
            constraints=parse_constraints(c.get("constraints"), "hydra.sweeper.constraints"),
        )
        from app.compose import compose_experiment

        settings.finalist_folds = int(c.get("finalist_folds", settings.finalist_folds))
        settings.cv, settings.finalists = plan_cv(
            c.get("cv", "auto"), c.get("finalists", "auto"),
            lambda: compose_experiment(space.overrides + fixed)[1], len(goals))
        settings.__post_init__()
        return settings

    def sweep(self, arguments: list[str]) -> dict:
        from .claim import Claimer, Heartbeat
        from .report import write_report
        from .settings import check_resume, create_study, make_sampler, record_settings
        from .trial_link import TrialLink

        settings = self.settings(arguments)
        study, storage = create_study(settings)
        check_resume(study, settings)
        record_settings(study, settings)
        claimer = Claimer(study, storage, settings)
        study.sampler = make_sampler(settings, claimer.new_session())
        log.info("nnsweep study %r: %d trials, %s", settings.name, settings.trials, settings.dir)
        job_idx = 0
        while True:
            batch = []
            for _ in range(settings.jobs):
                trial = claimer.claim()
                if trial is None:
                    break
                batch.append(trial)
            if not batch:
                break
            jobs = []
            for trial in batch:
                # the launcher composes a job from the hydra overrides and these alone: the
                # space's option (hparams_search=...) and the fixed overrides go with each
                overrides = settings.space.sample(trial) + settings.overrides
                # Optuna's pruners cannot judge several objectives: the job only reports
                pruner = settings.pruner if len(settings.goals) == 1 else "none"
                link = TrialLink(settings.storage, settings.dir, settings.name, trial.number,
                                 settings.metric, pruner, settings.cv, overrides=overrides)
                jobs.append([*overrides, f"++hydra.job.env_set.{TrialLink.ENV}={link.encode()}"])
            beats = [Heartbeat(storage, claimer.trial_id(t.number)) for t in batch]
            for beat in beats:
                beat.__enter__()
            try:
                returns = self.launcher.launch(jobs, initial_job_idx=job_idx)
            finally:
                for beat in beats:
                    beat.__exit__()
            job_idx += len(jobs)
            for trial, ret in zip(batch, returns):
                self.tell(claimer, trial, ret, settings.metric)
        from .finalists import run_finalists

        run_finalists(settings, study, progress=False)  # trained here, not as Hydra jobs
        summary = write_report(study, settings.dir, plots=bool(self.conf.get("plots", True)))
        best = summary.get("best_trial")
        if "pareto" in summary:
            from .pareto import front_table

            log.info("Pareto front (%s):\n%s\n%s", ", ".join(summary["objectives"]),
                     front_table(summary), settings.dir)
        elif best is not None:
            log.info("best trial #%d: %s = %.4f; test accuracy %s (baseline %s); %s",
                     best, settings.metric, summary["value"], summary.get("test_accuracy"),
                     (summary.get("baseline") or {}).get("test_accuracy"), settings.dir)
        return summary

    @staticmethod
    def tell(claimer, trial, ret, metric: str) -> None:
        """The job's outcome -> the trial's state: its ``run`` attr (written by the job)
        says pruned or diverged; a job that raised or returned NaN without one is FAIL."""
        from optuna.trial import TrialState

        from .claim import trial_info

        study = claimer.study
        frozen = claimer.storage.get_trial(claimer.trial_id(trial.number))
        if frozen.state != TrialState.RUNNING:
            return  # re-queued by another worker meanwhile
        info = trial_info(frozen)
        try:
            returned = ret.return_value
            error = None
        except Exception as e:  # the job raised: Hydra hands the exception back here
            returned, error = None, f"{type(e).__name__}: {e}"
        reason = info.get("stop_reason")
        value = info.get(metric)
        if error or info.get("fail_reason") or reason is None:
            why = info.get("fail_reason") or error or f"the job returned {returned!r} and reported nothing"
            if not info.get("fail_reason"):
                run = {**(frozen.user_attrs.get("run") or {}), "fail_reason": why[:1000]}
                claimer.storage.set_trial_user_attr(claimer.trial_id(trial.number), "run", run)
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, why.splitlines()[0] if why else "")
        elif reason == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
        elif reason == "diverged" or value is None or not math.isfinite(value):
            study.tell(trial.number, state=TrialState.FAIL)
        elif len(claimer.settings.goals) > 1 or claimer.settings.constraints:
            from .objectives import tell_goals

            tell_goals(claimer, trial, frozen)
        else:
            study.tell(trial.number, float(value))
