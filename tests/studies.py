"""Small studies for the sweeper's tests: settings on the quick space, loading a study back,
search.py in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna

from app.compose import CONF_DIR
from sweeper.space import load_space
from sweeper.study import StudySettings

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.n_samples=200", "trainer.epochs=4", "engine=numpy"]


def settings(tmp_path, trials, **kw) -> StudySettings:
    kw.setdefault("space", load_space("quick", CONF_DIR))
    kw.setdefault("overrides", FAST)
    return StudySettings(name=kw.pop("name", "s"), trials=trials, root=tmp_path, **kw)


def load(s: StudySettings) -> optuna.Study:
    from sweeper.storage import open_storage

    return optuna.load_study(study_name=s.name, storage=open_storage(s.storage, s.dir))


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def search_py(tmp_path, *args, cwd=ROOT, **popen) -> subprocess.Popen:
    """search.py started with --out tmp_path, quiet and without plots."""
    cmd = [sys.executable, str(ROOT / "search.py"), "--out", str(tmp_path), "--quiet",
           "--no-plots", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def running_trials(s: StudySettings, *, poll: float = 0.2, timeout: float = 120) -> list:
    """Wait until a worker of study ``s`` runs a trial; its RUNNING trials ([] on timeout)."""
    deadline, running = time.time() + timeout, []
    while time.time() < deadline and not running:
        time.sleep(poll)
        if (s.dir / "journal.log").exists():
            try:
                study = load(s)
            except KeyError:  # the journal is opened before the study is written to it
                continue
            running = [t for t in study.get_trials(deepcopy=False)
                       if t.state.name == "RUNNING" and "worker" in t.user_attrs]
    return running


def flag_error(tmp_path, monkeypatch, capsys, flags: list[str]) -> str:
    """search.py's flags parsed in ``tmp_path`` (the cwd, with --out under it), expected to
    be refused: exit status 2 and one line on stderr, which is returned."""
    import pytest

    from search import parse_args

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        parse_args(["--out", str(tmp_path / "studies"), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err

