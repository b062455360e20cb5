"""sweeper.settings: each worker session its own sampler seed; resuming with other settings."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from sweeper.space import parse_space
from sweeper.study import run_study
from tests.studies import settings


def test_resumed_and_joined_studies_never_replay_a_session(tmp_path):
    s = settings(tmp_path, 5, sampler="random", pruner="none")
    run_study(s, progress=False)
    s.trials = 10
    study = run_study(s, progress=False)  # resume: a new session, a new seed
    first = [t.params for t in study.trials[:5]]
    assert all(t.params not in first for t in study.trials[5:])
    # same seed, fresh study, one worker: exactly the same trials as the first session
    again = run_study(settings(tmp_path, 5, sampler="random", pruner="none", name="again"), progress=False)
    assert [t.params for t in again.trials] == first


def test_resume_with_other_settings_is_refused_naming_what_differs(tmp_path):
    run_study(settings(tmp_path, 2, sampler="random", pruner="none"), progress=False)
    other = parse_space({"params": {"optimizer.lr": "tag(log, interval(1e-3, 1e-2))"}})
    with pytest.raises(ConfigError, match=r"--space: study 's' was run with layers = .*\(now None\)"):
        run_study(settings(tmp_path, 4, space=other), progress=False)
    with pytest.raises(ConfigError, match="--metric: study 's' was run with 'val_accuracy'"):
        run_study(settings(tmp_path, 4, metric="val_loss", direction="maximize"), progress=False)
    with pytest.raises(ConfigError, match="--cv"):
        run_study(settings(tmp_path, 4, cv=3), progress=False)
    study = run_study(settings(tmp_path, 3, space=other, allow_changes=True, sampler="random"), progress=False)
    assert len(study.trials) == 3  # deliberately mixed
