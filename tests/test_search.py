"""Studies end to end on a small space: exact counts, resume, workers, kills, pruning,
tables, plots and clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conf.schema import CONF_DIR
from core.config import ConfigError
from sweeper.report import write_report
from sweeper.space import load_space, parse_space
from sweeper.study import StudySettings, counts, run_study

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


def test_exact_count_resume_tables_and_plots(tmp_path):
    s = settings(tmp_path, 5)
    study = run_study(s, progress=False)
    assert len(study.trials) == 5
    assert all(st in ("COMPLETE", "PRUNED", "FAIL") for st in states(study))
    # resume to a larger total: only the missing trials run
    s.trials = 8
    study = run_study(s, progress=False)
    assert [t.number for t in study.trials] == list(range(8))
    write_report(study, s.dir)
    trials = pd.read_csv(s.dir / "trials.csv")
    assert len(trials) == 8
    for col in ["number", "state", "value", "optimizer", "optimizer.lr", "layers.activation",
                "trainer.batch_size", "layers.depth", "best_epoch", "epochs_run", "pruned_at", "seconds", "fail_reason"]:
        assert col in trials.columns, col
    complete = trials[trials.state == "COMPLETE"]
    assert complete["value"].max() == pytest.approx(study.best_value)
    epochs = pd.read_csv(s.dir / "epochs.csv")
    assert set(epochs["trial"]) <= set(trials["number"])
    assert {"trial", "epoch", "value", "state", "val_loss", "lr"} <= set(epochs.columns)
    for name in ["history", "params", "curves", "importance", "heatmap"]:
        assert (s.dir / "plots" / f"{name}.png").stat().st_size > 10_000, name
    # the best model: evaluated once on the test split, selection used validation only
    saved = json.loads((s.dir / "summary.json").read_text())
    assert saved["best_trial"] == study.best_trial.number
    assert saved["value"] == pytest.approx(study.best_value)
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert (s.dir / "best" / "model.npz").exists()
    # trial folders are per number and never reused
    assert sorted(p.name for p in (s.dir / "trials").iterdir()) == [f"{i:04d}" for i in range(8)]
    # trials never evaluate the test split
    trial_summary = json.loads((s.dir / "trials" / "0000" / "summary.json").read_text())
    assert trial_summary["test_accuracy"] is None


def test_two_workers_unique_numbers_exact_total(tmp_path):
    # trials long enough (~0.5 s) that one worker cannot finish all 8 while the other spawns
    s = settings(tmp_path, 8, jobs=2, pruner="none",
                 overrides=["data=digits", "trainer.epochs=30", "layers.hidden=[128]",
                            "trainer.early_stopping.enabled=false", "engine=numpy"])
    study = run_study(s, progress=False)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(8))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both processes took trials
    assert counts(study)["RUNNING"] == 0


def test_aggressive_pruner_prunes(tmp_path):
    space = parse_space({"params": {"optimizer.lr": "tag(log, interval(1e-4, 1.0))", "optimizer": "choice(sgd)"},
                         "overrides": ["data=moons"]})
    s = settings(tmp_path, 14, space=space, pruner="halving", sampler="random",
                 overrides=["data.n_samples=200", "trainer.epochs=8", "engine=numpy", "trainer.early_stopping.enabled=false"])
    study = run_study(s, progress=False)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states(study)
    for t in pruned:
        assert t.user_attrs["pruned_at"] == max(t.intermediate_values)
        assert t.user_attrs["epochs_run"] < 8


def test_diverging_trial_fails_with_reason_and_study_goes_on(tmp_path):
    space = parse_space({"params": {"optimizer": "choice(sgd)", "optimizer.lr": "choice(1e9, 0.05)"}})
    s = settings(tmp_path, 6, space=space, sampler="random", pruner="none",
                 overrides=FAST + ["data=moons", "layers.hidden=[32,32]", "layers.activation=relu"])
    study = run_study(s, progress=False)
    assert len(study.trials) == 6
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["optimizer.lr"] == 1e9 for t in failed)
    assert all(t.user_attrs["fail_reason"].startswith("diverged") for t in failed)
    assert any(t.state.name == "COMPLETE" for t in study.trials)


def _search(tmp_path, *args, cwd=ROOT, **popen):
    cmd = [sys.executable, str(ROOT / "search.py"), "--out", str(tmp_path), "--quiet", "--no-plots", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_killed_worker_and_resume_reach_exact_total(tmp_path):
    slow = ["--space", "quick", "--study", "k", "--trials", "3", "--pruner", "none",
            "data=digits", "trainer.epochs=200", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[256,256]", "trainer.batch_size=16"]
    proc = _search(tmp_path, *slow)
    s = StudySettings(name="k", space=load_space("quick", CONF_DIR), trials=3, root=tmp_path)
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.2)
        if (s.dir / "journal.log").exists():
            running = [t for t in load(s).get_trials(deepcopy=False) if t.state.name == "RUNNING" and "dir" in t.user_attrs]
    assert running, "no trial started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running[0]
    assert load(s).trials[killed.number].state.name == "RUNNING"  # left behind by the dead worker
    # resume with short trials: the killed trial's parameters are re-run, the total is exact
    fast = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=3" for a in slow]
    fast = [a for a in fast if a != "layers.hidden=[256,256]"]
    out, err = _search(tmp_path, *fast).communicate(timeout=300)
    assert "error" not in err.lower(), err
    study = load(s)
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == 3
    assert c["RUNNING"] == 0 and c["WAITING"] == 0
    stale = study.trials[killed.number]
    assert stale.state.name == "FAIL" and stale.user_attrs["fail_reason"].startswith("stale")
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert (s.dir / "trials" / f"{killed.number:04d}").exists()  # the dead trial's folder is kept


def test_bad_storage_url_is_one_clear_line(tmp_path):
    out, err = _search(tmp_path, "--trials", "1", "--storage", "postgresql://u:secret@127.0.0.1:1/db").communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--storage" in lines[0] and "secret" not in err
    out, err = _search(tmp_path, "--trials", "1", "--storage", "redis://x").communicate(timeout=120)
    assert "error: --storage: unsupported URL" in err


def test_bad_space_fails_before_the_first_trial(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  optimizer.lrr: interval(0.1, 0.2)\n")
    proc = _search(tmp_path, "--trials", "2", "--space", str(bad))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "optimizer.lrr" in err and err.count("error:") == 1
    assert not (tmp_path / "bad" / "trials").exists()
    with pytest.raises(ConfigError, match="--sampler"):
        settings(tmp_path, 2, sampler="bayes")


def test_stale_detection_rules():
    import socket
    from types import SimpleNamespace

    from sweeper.study import is_stale

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


# ---------------------------------------------------------------- search.py flags at their edges

CORES = os.cpu_count() or 1
MAX_JOBS = f"1 <= --jobs <= {4 * CORES}"  # four worker processes per core
MAX_SEED = "0 <= --seed <= 4294967295"  # 2**32 - 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--trials", "0"], "error: --trials: 0 is out of range; allowed: 1 <= --trials"),
        (["--trials", "-3"], "error: --trials: -3 is out of range"),
        (["--trials", "1e6"], "error: --trials: invalid int value: '1e6'"),
        (["--jobs", "0"], "error: --jobs: 0 is out of range; allowed: 1 <= --jobs <= "),
        (["--jobs", "99999"], f"error: --jobs: 99999 is out of range; allowed: {MAX_JOBS}"),
        (["--timeout", "-5"], "error: --timeout: -5.0 is out of range; allowed: 0.0 < --timeout"),
        (["--timeout", "0"], "error: --timeout: 0.0 is out of range"),
        (["--timeout", "nan"], "error: --timeout: nan is not a finite number"),
        (["--timeout", "inf"], "error: --timeout: inf is not a finite number"),
        (["--seed", "-1"], f"error: --seed: -1 is out of range; allowed: {MAX_SEED}\n"),
        (["--seed", str(2**32)], "error: --seed: 4294967296 is out of range"),
        (
            ["--seed", str(2**32 - 1), "--jobs", "2"],  # worker 1 would seed with 2**32
            "error: --seed: 4294967295 is out of range; allowed: 0 <= --seed <= 4294967294 (",
        ),
        (["--study", "../../x"], "error: --study: '../../x' is not a study name; allowed: "),
        (["--study", "a/b"], "error: --study: 'a/b' is not a study name"),
        (["--study", ".."], "error: --study: '..' is not a study name"),
        (["--study", ""], "error: --study: '' is not a study name"),
        (["--study", ".hidden"], "error: --study: '.hidden' is not a study name"),
        (["--study", "x" * 129], "error: --study: 'xxxx"),
        (["--study", "a b"], "error: --study: 'a b' is not a study name"),
        (["--space", "...yaml"], "error: --study: '..' (the default, from --space ...yaml) is"),
        (["--out", ""], "error: --out: empty; allowed: a folder"),
        (["--sampler", "bayes"], "error: --sampler: invalid choice: 'bayes'"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_bad_flag_is_one_line_and_status_2(tmp_path, monkeypatch, capsys, flags, expected):
    from search import parse_args

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        parse_args(["--out", str(tmp_path / "studies"), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # nothing created


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    from search import parse_args

    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path / "file")])
    assert capsys.readouterr().err.startswith("error: --out: ")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize(
    "flags",
    [
        ["--study", "big_run-2.v1"],
        ["--study", "x" * 128],
        ["--seed", str(2**32 - 2), "--jobs", "2"],
        ["--timeout", "0.5", "--jobs", str(4 * CORES), "--trials", str(10**9)],
    ],
)
def test_good_flags_at_their_edges_pass(flags):
    from search import parse_args

    parse_args(flags)


def test_help_does_not_print_the_storage_password(monkeypatch, capsys):
    from search import parse_args

    monkeypatch.setenv("NNSWEEP_STORAGE", "postgresql://u:hunter2@db/x")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "hunter2" not in capsys.readouterr().out
    assert parse_args([]).storage == "postgresql://u:hunter2@db/x"  # still the default
    assert parse_args(["--storage", "sqlite:///x.db"]).storage == "sqlite:///x.db"


def test_study_name_cannot_leave_out(tmp_path):
    out = tmp_path / "a" / "b"
    proc = _search(out, "--trials", "1", "--study", "../../x", "data=moons", cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1
    assert err.startswith("error: --study: '../../x' is not a study name")
    assert not (tmp_path / "x").exists() and not out.exists()


def test_mistyped_storage_scheme_never_shows_the_password(tmp_path):
    proc = _search(tmp_path, "--trials", "1", "--storage", "postgressql://u:hunter2@db/x")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "hunter2" not in err
    assert "error: --storage: unsupported URL 'postgressql://u:***@db/x'" in err


@pytest.mark.parametrize("text", ["", "params:\n  - optimizer\n"])
def test_empty_or_malformed_space_stops_search_py_with_one_line(tmp_path, text):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    proc = _search(tmp_path / "studies", "--trials", "3", "--space", str(space))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("error: search.params: ") and err.count("\n") == 1
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.seed=-1", "error: trainer.seed: -1 is out of range; allowed: 0 <= trainer.seed"),
        ("optimizer.lr=inf", "error: optimizer.lr: inf is not a finite number"),
        ("=3", "error: Config group override must be a string or a list"),
    ],
)
def test_bad_override_stops_search_py_with_one_line(tmp_path, override, expected):
    proc = _search(tmp_path / "studies", "--trials", "2", "--space", "quick", override)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "studies").exists()
