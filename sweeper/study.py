"""The study loop: create or resume a study, run workers until the target is reached.

``--trials`` is the target total of finished trials (COMPLETE, PRUNED or FAIL), counted in
the storage, so a resumed study runs only what is missing. Each worker claims a trial under
a file lock (local storages) after re-queueing trials left RUNNING by a dead worker:
a worker is dead when its process is gone (same host) or its heartbeat is older than
``STALE_AFTER_SECONDS``. Workers are processes, not threads, and run asynchronously:
nobody waits for a batch to finish.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError, check_choice

from . import storage as S
from .objective import Objective, TrialFailed, worker_id
from .space import SearchSpace

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
PRUNERS = ("none", "median", "percentile", "hyperband", "halving")
log = logging.getLogger("nnsweep.study")


@dataclass
class StudySettings:
    name: str
    space: SearchSpace
    trials: int = 20
    root: Path = Path("outputs/studies")
    storage: str | None = None
    jobs: int = 1
    timeout: float | None = None  # seconds; no new trial starts after it
    seed: int = 0
    metric: str = "val_accuracy"
    direction: str = "maximize"
    sampler: str = "tpe"
    pruner: str = "median"
    overrides: list[str] = field(default_factory=list)
    stale_after: float = S.STALE_AFTER_SECONDS

    def __post_init__(self) -> None:
        check_choice("--sampler", self.sampler, SAMPLERS)
        check_choice("--pruner", self.pruner, PRUNERS)
        check_choice("--direction", self.direction, ("minimize", "maximize"))
        check_choice("--metric", self.metric, ("val_accuracy", "val_loss", "train_loss", "train_accuracy"))
        if self.trials < 1:
            raise ConfigError(f"--trials: {self.trials} is out of range; allowed: --trials >= 1")
        if self.jobs < 1:
            raise ConfigError(f"--jobs: {self.jobs} is out of range; allowed: --jobs >= 1")
        if self.sampler == "grid":
            self.space.grid()  # fails now, naming the key, if the space is not finite

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


FINISHED = ("COMPLETE", "PRUNED", "FAIL")
STALE_REASON = "stale"  # fail_reason prefix of a trial failed because its worker died


def make_sampler(settings: StudySettings, worker: int = 0):
    import optuna.samplers as S_

    seed = settings.seed + worker  # workers must not propose the same points
    name = settings.sampler
    if name == "tpe":
        return S_.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return S_.RandomSampler(seed=seed)
    if name == "cmaes":
        return S_.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return S_.QMCSampler(seed=seed, warn_independent_sampling=False)
    return S_.GridSampler(settings.space.grid(), seed=seed)


def make_pruner(name: str):
    import optuna.pruners as P

    return {
        "none": P.NopPruner,
        "median": lambda: P.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
        "percentile": lambda: P.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=2),
        "hyperband": lambda: P.HyperbandPruner(min_resource=1),
        "halving": lambda: P.SuccessiveHalvingPruner(min_resource=1),
    }[name]()


def create_study(settings: StudySettings, *, worker: int = 0, retries: int = 5):
    """Create the study, or load it when it exists (with retry: a fresh database may be
    created by another worker at the same moment)."""
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
                direction=settings.direction,
                sampler=make_sampler(settings, worker),
                pruner=make_pruner(settings.pruner),
                load_if_exists=True,
            )
            break
        except ConfigError:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))  # a fresh database being created by another worker
        except Exception as e:  # IntegrityError / DuplicatedStudyError under a race
            last = e
            time.sleep(0.2 * (attempt + 1))
    else:
        raise ConfigError(f"--storage: could not create or load study {settings.name!r}: {last}")
    actual = study.direction.name.lower()
    if actual != settings.direction:
        raise ConfigError(
            f"--direction: study {settings.name!r} exists with direction {actual}; "
            f"asked for {settings.direction}"
        )
    if worker == 0:
        attrs = {"metric": settings.metric, "space": settings.space.source, "overrides": settings.overrides}
        for key, value in attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
    return study


@contextlib.contextmanager
def claim_lock(settings: StudySettings):
    """Serialise claiming trials between workers: a file lock for storages on this machine,
    a PostgreSQL advisory lock for workers on many machines (other databases: none, so a
    study may overshoot its target by at most the number of workers)."""
    if not S.is_local(settings.storage):
        with S.database_lock(settings.storage, settings.name):
            yield
        return
    settings.dir.mkdir(parents=True, exist_ok=True)
    with open(settings.dir / ".claim.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial, stale_after: float, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    worker = trial.user_attrs.get("worker")
    beat = trial.user_attrs.get("heartbeat")
    if beat is None:
        beat = trial.datetime_start.timestamp() if trial.datetime_start else now
    if worker:
        host, _, pid = worker.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            return True
    return now - beat > stale_after


def recover_stale(study, stale_after: float) -> list[int]:
    """Fail trials left RUNNING by dead workers and re-queue their parameters."""
    from optuna.trial import TrialState

    storage = study._storage
    requeued = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, stale_after):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", f"{STALE_REASON}: worker died")
            ok = storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker finished or failed it first
            continue
        if ok:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            requeued.append(t.number)
            log.warning("trial %d was left RUNNING by a dead worker: failed and re-queued", t.number)
    return requeued


def trial_state(trial) -> str:
    """The trial's state name, with STALE for a FAIL left by a dead worker and re-queued:
    not a finished trial (it does not count toward the target)."""
    if trial.state.name == "FAIL" and str(trial.user_attrs.get("fail_reason", "")).startswith(STALE_REASON):
        return "STALE"
    return trial.state.name


def counts(study) -> dict[str, int]:
    """Trials by state (see trial_state)."""
    out = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0, "STALE": 0}
    for t in study.get_trials(deepcopy=False):
        state = trial_state(t)
        out[state] = out.get(state, 0) + 1
    return out


def n_finished(study) -> int:
    c = counts(study)
    return sum(c[s] for s in FINISHED)


def claim_trial(study, settings: StudySettings):
    """The next trial to run, or None when the target total is reached."""
    with claim_lock(settings):
        recover_stale(study, settings.stale_after)
        c = counts(study)
        used = sum(c[s] for s in FINISHED) + c["RUNNING"] + c["WAITING"]
        if c["WAITING"] == 0 and used >= settings.trials:
            return None
        return study.ask()


class Heartbeat:
    """Writes the trial's heartbeat user attr every few seconds from a daemon thread."""

    def __init__(self, study, trial, interval: float = S.HEARTBEAT_SECONDS) -> None:
        self.storage, self.trial_id, self.interval = study._storage, trial._trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_trial(study, trial, objective: Objective) -> str:
    """Run one claimed trial and tell the study how it ended; never raises for a trial."""
    import optuna
    from optuna.trial import TrialState

    try:
        with Heartbeat(study, trial):
            value = objective(trial)
    except optuna.TrialPruned as e:
        trial.set_user_attr("prune_reason", str(e))
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    except KeyboardInterrupt:
        trial.set_user_attr("fail_reason", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:  # one trial's error never kills the study
        reason = f"{type(e).__name__}: {e}" if not isinstance(e, (TrialFailed, ConfigError)) else str(e)
        trial.set_user_attr("fail_reason", reason[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason.splitlines()[0] if reason else "")
        return "FAIL"
    if not math.isfinite(value):
        trial.set_user_attr("fail_reason", f"objective is {value}")
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    study.tell(trial, value)
    return "COMPLETE"


def worker_loop(settings: StudySettings, worker: int = 0, on_trial=None) -> int:
    """Claim and run trials until the target is reached or the timeout passes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_study(settings, worker=worker)
    extra = ["engine.threads=1"] if settings.jobs > 1 else []
    objective = Objective(settings.space, settings.dir, settings.metric, extra + list(settings.overrides))
    start, ran = time.time(), 0
    while settings.timeout is None or time.time() - start < settings.timeout:
        trial = claim_trial(study, settings)
        if trial is None:
            break
        run_trial(study, trial, objective)
        ran += 1
        if on_trial is not None:
            on_trial(study)
    return ran


def _worker_main(settings: StudySettings, worker: int) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"[worker {worker} {worker_id()}] %(message)s")
    worker_loop(settings, worker)


def gpu_count() -> int:
    from core.engines import cuda_available

    if not cuda_available():
        return 0
    from numba import cuda

    return len(cuda.gpus)


def run_study(settings: StudySettings, *, progress: bool = True):
    """Create (once) or resume the study, run ``jobs`` workers, return the study."""
    import multiprocessing as mp

    from .progress import StudyProgress

    study = create_study(settings)  # created here, once, before any worker starts
    bar = StudyProgress(settings.trials, settings.direction, enabled=progress)
    bar.update(study)
    if settings.jobs == 1:
        worker_loop(settings, 0, on_trial=bar.update)
    else:
        ctx = mp.get_context("spawn")
        gpus = gpu_count()
        procs = []
        for i in range(settings.jobs):
            env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            if gpus:
                env["NNSWEEP_CUDA_DEVICE"] = str(i % gpus)  # each worker its own GPU
            with _environ(env):
                p = ctx.Process(target=_worker_main, args=(settings, i), name=f"nnsweep-worker-{i}")
                p.start()
            procs.append(p)
        try:
            while any(p.is_alive() for p in procs):
                bar.update(study)
                for p in procs:
                    p.join(timeout=1.0 / len(procs))
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            log.warning("%d worker(s) exited with codes %s; resume with the same command", len(bad), bad)
    bar.update(study)
    bar.close()
    return study


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
