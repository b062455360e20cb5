"""The study loop: create or resume a study, run workers until the target is reached.

Workers are processes, not threads, and run asynchronously: nobody waits for a batch to
finish. With ``jobs`` workers, this process is worker 0 and ``jobs - 1`` more are spawned;
each keeps one BLAS thread. What a claim is and how dead workers' trials come back:
sweeper.claim. What a trial writes: sweeper.objective.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time

from core.config import ConfigError

from .claim import Claimer, Heartbeat, counts, worker_id
from .objective import Objective, TrialFailed
from .settings import StudySettings, check_resume, create_study, make_sampler, record_settings

__all__ = ["StudyAborted", "StudySettings", "counts", "run_study", "run_trial", "worker_loop"]

log = logging.getLogger("nnsweep.study")
STREAK = 5  # this many trials in a row failing with the same reason stop the study


class StudyAborted(ConfigError):
    """A fault that would fail every trial (an unwritable folder, a full disk, a missing
    data file): the study stops with one line, and the trial that met it runs again later."""


class TrialTaken(Exception):
    """This worker's trial was failed and re-queued by another worker while this one was
    paused (SIGSTOP, a suspended laptop) for longer than the stale limit."""


def _is_taken(claimer: Claimer, trial) -> bool:
    from optuna.trial import TrialState

    state = claimer.storage.get_trial(claimer.trial_id(trial.number)).state
    return state != TrialState.RUNNING


def run_trial(claimer: Claimer, trial, objective: Objective) -> tuple[str, dict]:
    """Run one claimed trial and tell the study how it ended; never raises for a trial's
    own failure. Returns the state name and the ``run`` info written with it."""
    import optuna
    from optuna.trial import TrialState

    study, info = claimer.study, {}
    state, value = TrialState.COMPLETE, None
    try:
        with Heartbeat(claimer.storage, claimer.trial_id(trial.number)):
            value = objective(trial, info)
        if not all(map(math.isfinite, value if isinstance(value, list) else [value])):
            state, info["fail_reason"] = TrialState.FAIL, f"objective is {value}"
    except optuna.TrialPruned as e:
        state, info["prune_reason"] = TrialState.PRUNED, str(e)
    except KeyboardInterrupt:
        with claimer.lock():
            claimer.requeue(trial, "interrupted")
        raise
    except OSError as e:  # the machine, not the trial: every other trial would fail too
        if _is_taken(claimer, trial):
            raise TrialTaken() from None
        with claimer.lock():
            claimer.requeue(trial, f"{type(e).__name__}")
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise StudyAborted(f"trial {trial.number}: {e.strerror or e}{where}; the study stopped, "
                           "fix it and run the same command to resume") from None
    except Exception as e:  # one trial's error never kills the study
        if _is_taken(claimer, trial):
            raise TrialTaken() from None
        own = isinstance(e, (TrialFailed, ConfigError))
        reason = str(e) if own else f"{type(e).__name__}: {e}"
        state, info["fail_reason"] = TrialState.FAIL, reason[:1000]
        log.warning("trial %d failed: %s", trial.number, reason.splitlines()[0] if reason else "")
    try:
        trial.set_user_attr("run", info)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except Exception:
        if _is_taken(claimer, trial):
            raise TrialTaken() from None
        raise
    return state.name, info


def worker_loop(settings: StudySettings, on_trial=None) -> int:
    """Claim and run trials until the target is reached or the timeout passes."""
    study, storage = create_study(settings)
    claimer = Claimer(study, storage, settings)
    study.sampler = make_sampler(settings, claimer.new_session())
    objective = Objective(settings.space, settings.dir, settings.metric, list(settings.overrides),
                          cv=settings.cv, one_thread=settings.jobs > 1)
    if len(settings.goals) > 1 or settings.constraints:
        from .objectives import goal_objective

        objective = goal_objective(objective, settings)
    start, ran, streak = time.time(), 0, []
    while settings.timeout is None or time.time() - start < settings.timeout:
        trial = claimer.claim()
        if trial is None:
            break
        try:
            state, info = run_trial(claimer, trial, objective)
        except TrialTaken:
            log.warning("trial %d was re-queued by another worker while this one was paused: "
                        "dropped here, it runs again", trial.number)
            continue
        ran += 1
        if on_trial is not None:
            on_trial(study)
        streak = _failure_streak(streak, state, info.get("fail_reason", ""))
        if len(streak) >= STREAK:
            raise StudyAborted(f"{STREAK} trials in a row failed with: {streak[-1]}; "
                               "the study stopped (see trials.csv)")
    return ran


def _failure_streak(streak: list[str], state: str, reason: str) -> list[str]:
    """The reasons of the last trials that all failed the same way (diverging is a
    trial's own failure, not the study's, and does not count)."""
    if state != "FAIL":
        return []
    if reason.startswith(("diverged", "objective is")):
        return []
    return streak + [reason] if not streak or streak[-1] == reason else [reason]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(settings: StudySettings, worker: int) -> None:
    # started with SIGINT ignored (a Ctrl-C during start-up would print an import traceback);
    # from here on SIGINT (Ctrl-C) and SIGTERM (the parent stopping) re-queue the trial
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format=f"[worker {worker} {worker_id()}] %(message)s")
    try:
        worker_loop(settings)
    except KeyboardInterrupt:
        pass  # the trial was re-queued; the parent reports the interruption
    except ConfigError as e:
        log.error("%s", e)
        raise SystemExit(2) from None


def gpu_count() -> int:
    from core.engines import cuda_available

    if not cuda_available():
        return 0
    from numba import cuda

    return len(cuda.gpus)


def _spawn(settings: StudySettings, n: int) -> list:
    """Start workers 1..n-1 (this process is worker 0), each with one BLAS thread and, on
    a multi-GPU machine, its own GPU."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    gpus = gpu_count()
    procs = []
    for i in range(1, n):
        env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if gpus:
            from core.engines.cuda import DEVICE_ENV  # imports numba.cuda: only with GPUs

            env[DEVICE_ENV] = str(i % gpus)
        with _environ(env), _sigint_ignored():
            p = ctx.Process(target=_worker_main, args=(settings, i), name=f"nnsweep-worker-{i}")
            p.start()
        procs.append(p)
    return procs


def run_study(settings: StudySettings, *, progress: bool = True, label: str = "trials",
              while_waiting=None):
    """Create (once) or resume the study, run ``jobs`` workers, return the study.
    ``label`` names the progress bar. ``while_waiting()`` runs once if this process runs
    out of trials while other workers still run theirs (its CPU is idle then): the caller's
    later work that can start early (search.py: importing the report's plotting)."""
    from .progress import StudyProgress

    study, _ = create_study(settings)  # created here, once, before any worker starts
    check_resume(study, settings)
    record_settings(study, settings)
    bar = StudyProgress(settings.trials, enabled=progress, label=label)

    def update(study) -> None:
        if bar.enabled:
            bar.update(counts(study), _best(study))

    update(study)
    procs = _spawn(settings, settings.jobs) if settings.jobs > 1 else []
    try:
        with _one_blas_thread(settings.jobs > 1):
            worker_loop(settings, on_trial=update)
        if while_waiting is not None and any(p.is_alive() for p in procs):
            try:  # an optional head start: its failure is met again, and reported, later
                while_waiting()
            except Exception as e:  # noqa: BLE001
                log.debug("while_waiting: %s", e)
        while any(p.is_alive() for p in procs):
            update(study)
            for p in procs:
                p.join(timeout=0.5 / len(procs))
    except BaseException:
        for p in procs:  # each re-queues its running trial and exits
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    finally:
        update(study)
        bar.close()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        log.warning("%d worker(s) exited with codes %s; resume with the same command", len(bad), bad)
    return study


def _best(study) -> float | None:
    try:
        return float(study.best_value)
    except (ValueError, RuntimeError):  # no complete trial yet; several objectives
        return None


def _one_blas_thread(on: bool):
    if not on:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


@contextlib.contextmanager
def _sigint_ignored():
    """Children inherit SIGINT ignored (Python keeps an ignored SIGINT at start-up)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
