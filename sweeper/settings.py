"""What a study is: its settings, its sampler and pruner, and creating or loading it.

A study keeps the settings it was created with as user attrs (metric, space, overrides), so
``scripts/report.py`` can rebuild its tables from the storage alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import METRICS, ConfigError, check_choice, check_range

from . import storage as S
from .space import SearchSpace

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid", "nsga2")
# with several objectives: CMA-ES is single-objective only; Hyperband and successive halving
# are Optuna pruners, which never see a multi-objective trial (sweeper.objectives.HopelessRule)
MULTI_SAMPLERS = ("tpe", "nsga2", "random", "qmc", "grid")
MULTI_PRUNERS = ("none", "median", "percentile")
PRUNERS = ("none", "median", "percentile", "hyperband", "halving")
# --cv auto: cross-validated selection where a validation split is too small to tell
# configurations apart (README, "Cross-validated selection"); beyond it the hold-out split
# is large enough
AUTO_FOLDS = 5
AUTO_CV_MAX_SAMPLES = 5_000
# --finalists auto: hold-out trials, then the best ones trained again with AUTO_FOLDS folds
# (sweeper.finalists); 10 kept the picks of three digits studies as good as 5-fold trials
AUTO_FINALISTS = 10
MAX_FINALISTS = 1_000


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def small_data(cfg) -> bool:
    """Whether a composed ExperimentConfig's train+val split holds at most
    AUTO_CV_MAX_SAMPLES samples: too few for one validation split to rank configurations."""
    from core.experiment import cached_dataset

    ds = cached_dataset(cfg.data, cfg.trainer.dtype)
    return len(ds.train.X) + len(ds.val.X) <= AUTO_CV_MAX_SAMPLES


def plan_cv(cv: int | str, finalists: int | str, experiment, n_goals: int) -> tuple[int, int]:
    """(folds per trial, finalists) for --cv and --finalists, each a number or "auto";
    ``experiment()`` composes the study's ExperimentConfig, called only for --cv auto.

    --cv auto on small data (small_data): hold-out trials and AUTO_FINALISTS finalists, or,
    with several objectives (a front, not one pick), AUTO_FOLDS-fold trials; on larger data
    the hold-out split is trusted (1 fold, no finalists). An explicit --cv K has no
    finalists unless --finalists asks for them. Finalists re-rank hold-out trials by one
    objective; asked for otherwise: ConfigError naming --finalists."""
    auto = cv == "auto"
    small = auto and small_data(experiment())
    if auto:
        cv = AUTO_FOLDS if small and n_goals > 1 else 1
    if finalists == "auto":
        finalists = AUTO_FINALISTS if small and n_goals == 1 else 0
    if finalists and cv > 1:
        raise ConfigError(f"--finalists: {finalists} with --cv {cv}: every trial is already "
                          "cross-validated; allowed: --finalists 0, or --cv 1 for hold-out trials")
    if finalists and n_goals > 1:
        raise ConfigError(f"--finalists: {finalists} with several objectives; allowed: "
                          "--finalists 0 (a front is chosen, not one pick)")
    return cv, finalists


@dataclass
class StudySettings:
    name: str
    space: SearchSpace
    trials: int = 20
    root: Path = Path("outputs/studies")
    storage: str | None = None
    jobs: int = 1  # worker processes; search.py's default is every available CPU
    timeout: float | None = None  # seconds; no new trial starts after it
    seed: int = 0
    metric: str = "val_accuracy"
    direction: str = "maximize"
    sampler: str = "tpe"
    pruner: str = "median"
    overrides: list[str] = field(default_factory=list)
    stale_after: float = S.STALE_AFTER_SECONDS
    cv: int = 1  # folds per trial (1: the hold-out validation split)
    finalists: int = 0  # the best hold-out trials trained again with K folds (sweeper.finalists)
    finalist_folds: int = AUTO_FOLDS
    folder: Path | None = None  # the study's folder, when not root/name (a finalists' study)
    allow_changes: bool = False  # resume even if the space, metric, overrides or cv changed
    # sweeper.objectives: every objective (default: the one of metric and direction) and the
    # constraints (Bound); several goals make a multi-objective study
    goals: tuple = ()
    constraints: tuple = ()

    def __post_init__(self) -> None:
        if self.goals:  # metric and direction are the first goal's (what trials report)
            self.metric, self.direction = self.goals[0].name, self.goals[0].direction
        check_choice("--sampler", self.sampler, SAMPLERS)
        check_choice("--pruner", self.pruner, PRUNERS)
        check_choice("--direction", self.direction, ("minimize", "maximize"))
        check_choice("--metric", self.metric, METRICS)
        if self.trials < 1:
            raise ConfigError(f"--trials: {self.trials} is out of range; allowed: --trials >= 1")
        if self.jobs < 1:
            raise ConfigError(f"--jobs: {self.jobs} is out of range; allowed: --jobs >= 1 or auto")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or not 1 <= self.cv <= 20:
            raise ConfigError(f"--cv: {self.cv!r} is out of range; allowed: auto or 1 <= --cv <= 20")
        check_range("--finalists", self.finalists, low=0, high=MAX_FINALISTS)
        check_range("--finalist-folds", self.finalist_folds, low=2, high=20)
        if not self.goals:
            from .objectives import Goal

            self.goals = (Goal(self.metric, self.direction),)
        if len(self.goals) > 1:
            check_choice("--sampler", self.sampler, MULTI_SAMPLERS)
            if self.pruner not in MULTI_PRUNERS:
                raise ConfigError(f"--pruner: {self.pruner} does not apply to several objectives "
                                  f"(Optuna prunes single-objective trials only); allowed: "
                                  f"{', '.join(MULTI_PRUNERS)}")
        if self.sampler == "grid":
            self.space.grid()  # fails now, naming the key, if the space is not finite

    @property
    def dir(self) -> Path:
        return Path(self.folder) if self.folder is not None else Path(self.root) / self.name


def make_sampler(settings: StudySettings, session: int = 0):
    """The sampler of one worker session. Every session of a study (each worker, each resume)
    gets its own seed from (--seed, session number): a resumed or joined study never replays
    the random start of an earlier session, while a fresh study with one worker is exactly
    reproducible (session 0)."""
    import numpy as np
    import optuna.samplers as S_

    seed = int(np.random.SeedSequence([settings.seed, session]).generate_state(1)[0])
    name = settings.sampler
    if name == "tpe":
        from .fast_tpe import install

        install()  # SciPy's truncated-normal helpers: half the cost of every ask
        return S_.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return S_.RandomSampler(seed=seed)
    if name == "cmaes":
        return S_.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return S_.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return S_.NSGAIISampler(seed=seed)
    return S_.GridSampler(settings.space.grid(), seed=seed)


# median and percentile judge a trial from its 6th epoch on (report steps are epochs from
# 1): at epoch 2 they favoured fast starters over better finishers on digits (standardized
# pixels over raw ones, README "Cross-validated selection"), and a seed whose search pruned
# raw pixels early picked 0.9777 instead of 0.9851
PRUNER_WARMUP = 5


def make_pruner(name: str):
    import optuna.pruners as P

    from .pruning import SteadyPercentilePruner as Percentile  # Optuna's, kept between reports

    return {
        "none": P.NopPruner,
        "median": lambda: Percentile(50.0, n_startup_trials=5, n_warmup_steps=PRUNER_WARMUP),
        "percentile": lambda: Percentile(25.0, n_startup_trials=5, n_warmup_steps=PRUNER_WARMUP),
        "hyperband": lambda: P.HyperbandPruner(min_resource=1),
        "halving": lambda: P.SuccessiveHalvingPruner(min_resource=1),
    }[name]()


def create_study(settings: StudySettings, *, session: int = 0, retries: int = 5):
    """Create the study, or load it when it exists (with retry: a fresh database may be
    created by another worker at the same moment). Returns (study, storage)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    last: Exception | None = None
    for attempt in range(retries):
        try:
            storage = S.open_storage(settings.storage, settings.dir)
            study = optuna.create_study(
                storage=storage,
                study_name=settings.name,
                directions=[g.direction for g in settings.goals],
                sampler=make_sampler(settings, session),
                pruner=make_pruner(settings.pruner),
                load_if_exists=True,
            )
            break
        except ConfigError:
            if attempt == retries - 1 or S.is_local(settings.storage):
                raise
            time.sleep(0.5 * (attempt + 1))  # a fresh database being created by another worker
        except Exception as e:  # IntegrityError / DuplicatedStudyError under a race
            last = e
            time.sleep(0.2 * (attempt + 1))
    else:
        raise ConfigError(f"--storage: could not create or load study {settings.name!r}: "
                          f"{S.scrub(str(last), settings.storage)}")
    actual = [d.name.lower() for d in study.directions]
    if actual != [g.direction for g in settings.goals]:
        if len(actual) == 1 == len(settings.goals):
            raise ConfigError(
                f"--direction: study {settings.name!r} exists with direction {actual[0]}; "
                f"asked for {settings.direction}"
            )
        raise ConfigError(
            f"--metric: study {settings.name!r} exists with {len(actual)} objective(s) "
            f"({', '.join(actual)}); asked for {len(settings.goals)} "
            f"({', '.join(g.direction for g in settings.goals)}); use another --study"
        )
    return study, storage


def study_settings(settings: StudySettings) -> dict:
    """The settings that define what a study's trials mean, stored with the study."""
    from .objectives import spec_text

    return {
        "metric": spec_text(settings.goals),
        "constraints": [b.text() for b in settings.constraints],
        "space_definition": settings.space.definition(),
        "overrides": list(settings.overrides),
        "cv": settings.cv,
    }


FLAGS = {"metric": "--metric", "space_definition": "--space", "overrides": "overrides",
         "cv": "--cv", "constraints": "--constraint"}


def check_resume(study, settings: StudySettings) -> None:
    """Refuse to resume a study whose trials were run with other settings (they would mix
    with the new ones, or fail): one line naming what differs."""
    if settings.allow_changes:
        return
    old = study.user_attrs
    for key, new in study_settings(settings).items():
        if key not in old or old[key] == new:
            continue
        raise ConfigError(
            f"{FLAGS[key]}: study {study.study_name!r} was run with {_differs(old[key], new)}; "
            "use the same settings, another --study, or --allow-changes to mix them"
        )


def _differs(old, new, path: str = "") -> str:
    """'params.optimizer.lr = <old> (now <new>)' for the first item that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _differs(old.get(key), new.get(key), f"{path}{key}.")
    where = f"{path[:-1]} = " if path else ""
    return f"{where}{old!r} (now {new!r})"


def record_settings(study, settings: StudySettings) -> None:
    """Store the settings a report needs with the study (the first session's, or the new
    ones when --allow-changes mixes them)."""
    attrs = {**study_settings(settings), "space": settings.space.source,
             "baseline_overrides": settings.space.overrides + settings.overrides,
             "finalists": settings.finalists, "finalist_folds": settings.finalist_folds}
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
