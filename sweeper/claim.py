"""Claiming trials: exact totals, dead workers' trials re-queued, heartbeats.

``--trials`` is the target total of finished trials (COMPLETE, PRUNED or FAIL). A worker
claims its next trial under a lock (a file lock for storages on this machine, a PostgreSQL
advisory lock for a shared database), after re-queueing the trials left RUNNING by a dead
worker: one whose process is gone (same host) or whose heartbeat is older than
``stale_after`` seconds. Such a trial ends as FAIL with a ``stale`` reason, shown as STALE
in the tables, and does not count toward the target: its parameters run again.

A claim costs the same at trial 1,000 as at trial 10: it reads only the RUNNING and WAITING
trials, never every trial. The number of trials comes from probing trial numbers (they are
0..n-1; a point query each, starting from the count this worker saw last: Optuna's
``get_n_trials`` would load every trial from a database), and the number of STALE trials
is a study user attr kept under the claim lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from typing import Self

from . import storage as S

FINISHED = ("COMPLETE", "PRUNED", "FAIL")
STALE_REASON = "stale"  # fail_reason prefix of a trial failed because its worker died
N_STALE = "n_stale"  # study user attr: how many FAIL trials are STALE
SESSIONS = "sessions"  # study user attr: worker sessions started so far
OWN_ATTRS = ("worker", "heartbeat", "run", "retry_of")  # a trial's run's own, not its retry's
log = logging.getLogger("nnsweep.study")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_info(trial) -> dict:
    """What nnsweep recorded about a trial: the ``run`` user attr written at its end (and,
    for studies of older versions, the same keys as separate user attrs)."""
    attrs = trial.user_attrs
    return {**{k: v for k, v in attrs.items() if k != "run"}, **(attrs.get("run") or {})}


def trial_state(trial) -> str:
    """The trial's state name, with STALE for a FAIL left by a dead or interrupted worker
    and re-queued: not a finished trial (it does not count toward the target)."""
    name = trial.state.name
    if name == "FAIL" and str(trial_info(trial).get("fail_reason", "")).startswith(STALE_REASON):
        return "STALE"
    return name


def counts(study) -> dict[str, int]:
    """Trials by state (see trial_state); reads every trial, for reports and progress."""
    out = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0, "STALE": 0}
    for t in study.get_trials(deepcopy=False):
        state = trial_state(t)
        out[state] = out.get(state, 0) + 1
    return out


@contextlib.contextmanager
def claim_lock(storage_url: str | None, study_dir, name: str):
    """Serialise claiming trials between workers: a file lock for storages on this machine,
    a PostgreSQL advisory lock for workers on many machines (other databases: none, so a
    study may overshoot its target by at most the number of workers)."""
    if not S.is_local(storage_url):
        with S.database_lock(storage_url, name):
            yield
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / ".claim.lock", "a") as fh:
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


class Claimer:
    """One worker's access to the study's queue (the storage API is public Optuna)."""

    def __init__(self, study, storage, settings) -> None:
        self.study, self.storage, self.settings = study, storage, settings
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._n = 0  # trials known to exist (numbers 0.._n-1)

    def lock(self):
        s = self.settings
        return claim_lock(s.storage, s.dir, s.name)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _exists(self, number: int) -> bool:
        try:
            self.trial_id(number)
        except KeyError:
            return False
        return True

    def n_trials(self) -> int:
        """Trials in the study, in O(log n) point queries the first time and O(1 + trials
        other workers created since) after that."""
        n = self._n
        if self._exists(n):
            step = 1
            while self._exists(n + step):
                n, step = n + step, step * 2
            lo, hi = n, n + step  # lo exists, hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if self._exists(mid) else (lo, mid)
            n = lo + 1
        self._n = n
        return n

    def n_stale(self) -> int:
        """STALE trials so far (a study user attr; counted once for a study of an older
        version that has no such attr). Call under the lock."""
        value = self.study.user_attrs.get(N_STALE)
        if value is None:
            value = sum(trial_state(t) == "STALE" for t in self.study.get_trials(deepcopy=False))
            self.study.set_user_attr(N_STALE, value)
        return int(value)

    def new_session(self) -> int:
        """A number no other worker session of this study has (seeds its sampler)."""
        with self.lock():
            n = int(self.study.user_attrs.get(SESSIONS, 0))
            self.study.set_user_attr(SESSIONS, n + 1)
        return n

    def requeue(self, trial, reason: str) -> bool:
        """Fail a RUNNING trial as STALE and queue its parameters again (call under the
        lock). False when it already finished (another worker got there first)."""
        from optuna.trial import TrialState

        trial_id = self.trial_id(trial.number)
        try:
            run = {**(trial.user_attrs.get("run") or {}), "fail_reason": f"{STALE_REASON}: {reason}"}
            self.storage.set_trial_user_attr(trial_id, "run", run)
            ok = self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except Exception:  # another worker finished or failed it first
            return False
        if ok:
            self.study.set_user_attr(N_STALE, self.n_stale() + 1)
            kept = {k: v for k, v in trial.user_attrs.items() if k not in OWN_ATTRS}  # source_trial
            self.study.enqueue_trial(trial.params, user_attrs={**kept, "retry_of": trial.number})
        return bool(ok)

    def recover_stale(self) -> list[int]:
        """Fail trials left RUNNING by dead workers and re-queue their parameters."""
        from optuna.trial import TrialState

        requeued = []
        running = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        for t in running:
            if is_stale(t, self.settings.stale_after) and self.requeue(t, "worker died"):
                requeued.append(t.number)
                log.warning("trial %d was left RUNNING by a dead worker: failed and re-queued", t.number)
        return requeued

    def claim(self):
        """The next trial to run, or None when the target total is reached."""
        from optuna.trial import TrialState

        with self.lock():
            self.recover_stale()
            waiting = self.storage.get_n_trials(self.study_id, TrialState.WAITING)
            used = self.n_trials() - self.n_stale()
            if waiting == 0 and used >= self.settings.trials:
                return None
            return self.study.ask()


class Heartbeat:
    """Writes the trial's ``heartbeat`` user attr every few seconds from a daemon thread:
    the only heartbeat writes (a trial shorter than the interval writes none)."""

    def __init__(self, storage, trial_id: int, interval: float = S.HEARTBEAT_SECONDS) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
