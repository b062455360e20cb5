"""sweeper.claim: stale trials, claims that never read every trial, counting by probing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.studies import settings


def test_stale_detection_rules():
    import socket
    from types import SimpleNamespace

    from sweeper.claim import is_stale

    now = 10_000.0
    other = SimpleNamespace(user_attrs={"worker": "elsewhere:1", "heartbeat": now - 30}, datetime_start=None)
    assert not is_stale(other, 60, now)  # another machine, beating recently
    other.user_attrs["heartbeat"] = now - 61
    assert is_stale(other, 60, now)  # another machine, silent past the grace period
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here_dead = SimpleNamespace(user_attrs={"worker": f"{socket.gethostname()}:{dead.stdout.strip()}", "heartbeat": now},
                                datetime_start=None)
    assert is_stale(here_dead, 60, now)  # this machine, process gone: no need to wait
    here_alive = SimpleNamespace(user_attrs={"worker": f"{socket.gethostname()}:{os.getpid()}", "heartbeat": now},
                                 datetime_start=None)
    assert not is_stale(here_alive, 60, now)


def test_claims_never_read_every_trial(tmp_path):
    """A claim costs the same at trial 1,000 as at trial 10: only filtered reads and counts."""
    from optuna.trial import TrialState

    from sweeper.claim import Claimer
    from sweeper.settings import create_study

    s = settings(tmp_path, 40, sampler="random", pruner="none")
    study, storage = create_study(s)
    for _ in range(30):
        study.tell(study.ask(), 0.5)
    reads = []
    real = storage.get_all_trials

    def spy(study_id, deepcopy=True, states=None):
        reads.append(states)
        return real(study_id, deepcopy=deepcopy, states=states)

    storage.get_all_trials = spy
    claimer = Claimer(study, storage, s)
    claimer.n_stale()  # once per study, for one of an older version
    reads.clear()
    trial = claimer.claim()
    assert trial is not None and trial.number == 30
    assert reads and all(states is not None and set(states) <= {TrialState.RUNNING, TrialState.WAITING}
                         for states in reads), reads


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 31, 64, 100])
def test_trial_count_by_probing_numbers(tmp_path, n):
    from sweeper.claim import Claimer
    from sweeper.settings import create_study

    s = settings(tmp_path, 200, sampler="random", pruner="none")
    study, storage = create_study(s)
    claimer = Claimer(study, storage, s)
    for i in range(n):
        study.ask()
        if i == n // 2:
            assert claimer.n_trials() == i + 1  # a count seen earlier is the next start
    assert claimer.n_trials() == n == len(study.trials)
