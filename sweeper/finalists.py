"""Finalists: a study's best hold-out trials trained again with K-fold cross-validation.

On a validation split of a few hundred samples the best trials tie or differ by noise, and
the maximum of many noisy scores is a lucky one (the winner's curse). K-fold trials cure
that at K times the training of every trial; finalists spend it only where the choice is
made. The study's trials run on the hold-out split (cheap, pruned per epoch); then its N
best complete trials (sweeper.final.ranked: value, ties to the lower validation loss) are
trained again with K folds, unpruned, early stopping on the fold mean, and the pick is the
finalist with the best fold mean. Its final model is the K fold models as an ensemble, and
the baseline is trained with the same K folds. Measured on digits in the README ("Choosing
the final model"): the picks of 10 finalists score as well on test as the picks of a
search whose every trial is 5-fold, in about 1.5x the hold-out search's time instead of 3-12x.

The finalists are the trials of a second Optuna study in the same storage, named
``<study>.cv<K>``: each is a source trial's parameters, enqueued once with the user attr
``source_trial`` (longest first, by the source's training time), then claimed and run by
the usual workers, locks and re-queueing (sweeper.study), so an interrupted run resumes
where it stopped and several machines share them. A resumed study with new leaders
enqueues just those. Folders: ``<study dir>/finalists/trials/<n>/``.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from .claim import Claimer, trial_info, trial_state
from .final import ranked
from .settings import StudySettings, create_study

SOURCE = "source_trial"  # user attr of a finalist: the number of the trial it re-runs
log = logging.getLogger("nnsweep.study")


def finalist_name(name: str, folds: int) -> str:
    return f"{name}.cv{folds}"


def finalist_settings(settings: StudySettings) -> StudySettings:
    """The settings of the finalists' study: the same space, metric, overrides and storage
    (the study's own journal when it has no --storage), K folds, no pruning, no sampling
    (every parameter is fixed), its folder under the study's."""
    storage = settings.storage or str(settings.dir / "journal.log")
    return dataclasses.replace(
        settings, name=finalist_name(settings.name, settings.finalist_folds), storage=storage,
        cv=settings.finalist_folds, finalists=0, sampler="random", pruner="none", trials=1,
        folder=settings.dir / "finalists", timeout=None)


def enqueue(settings: StudySettings, study) -> int:
    """Create the finalists' study if needed and enqueue the source study's best trials
    that are not finalists yet; returns how many finalists the study holds (its target)."""
    fin = finalist_settings(settings)
    fstudy, storage = create_study(fin)
    claimer = Claimer(fstudy, storage, fin)
    with claimer.lock():
        have = {t.user_attrs.get(SOURCE) for t in fstudy.get_trials(deepcopy=False)
                if trial_state(t) != "STALE"}
        new = [t for t in ranked(study, settings.finalists) if t.number not in have]
        # longest first (workers take them in this order): a long finalist started last
        # would keep one worker busy while the others wait; a finalist trains ~K times as
        # long as its source trial did
        new.sort(key=lambda t: -(trial_info(t).get("train_seconds") or 0.0))
        for t in new:
            fstudy.enqueue_trial(t.params, user_attrs={SOURCE: t.number})
        return claimer.n_trials() - claimer.n_stale()


def run_finalists(settings: StudySettings, study, *, progress: bool = True, while_waiting=None):
    """Train the study's ``settings.finalists`` best trials with ``settings.finalist_folds``
    folds (those not trained yet); returns the finalists' study, or None without finalists
    or complete trials. ``while_waiting``: see sweeper.study.run_study."""
    if settings.finalists < 1 or not ranked(study, 1):
        return None
    from .study import run_study

    fin = finalist_settings(settings)
    fin.trials = enqueue(settings, study)
    return run_study(fin, progress=progress, label="finalists", while_waiting=while_waiting)


def load_finalists(study):
    """The finalists' study of ``study`` (same storage), or None when it has none."""
    import optuna

    folds = int(study.user_attrs.get("finalist_folds") or 0)
    if not study.user_attrs.get("finalists") or folds < 2:
        return None
    try:
        return optuna.load_study(study_name=finalist_name(study.study_name, folds),
                                 storage=study._storage)
    except KeyError:  # never run (interrupted before the finalists started)
        return None


def finalist_values(study) -> dict[int, float]:
    """source trial number -> its finalist's fold mean, for the tables."""
    fstudy = load_finalists(study)
    if fstudy is None:
        return {}
    return {t.user_attrs[SOURCE]: t.value for t in fstudy.get_trials(deepcopy=False)
            if trial_state(t) == "COMPLETE" and SOURCE in t.user_attrs
            and t.value is not None and math.isfinite(t.value)}
