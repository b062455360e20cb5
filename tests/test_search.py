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
from sweeper.claim import counts
from sweeper.report import write_report
from sweeper.space import load_space, parse_space
from sweeper.study import StudySettings, run_study

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
    # the best value, ties to the lowest val_loss (checked on the table, independently)
    top = complete[complete["value"] == complete["value"].max()]
    assert saved["best_trial"] == int(top.sort_values(["val_loss", "number"]).iloc[0]["number"])
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
        assert t.user_attrs["run"]["pruned_at"] == max(t.intermediate_values)
        assert t.user_attrs["run"]["epochs_run"] < 8


def test_diverging_trial_fails_with_reason_and_study_goes_on(tmp_path):
    space = parse_space({"params": {"optimizer": "choice(sgd)", "optimizer.lr": "choice(1e9, 0.05)"}})
    s = settings(tmp_path, 6, space=space, sampler="random", pruner="none",
                 overrides=FAST + ["data=moons", "layers.hidden=[32,32]", "layers.activation=relu"])
    study = run_study(s, progress=False)
    assert len(study.trials) == 6
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["optimizer.lr"] == 1e9 for t in failed)
    assert all(t.user_attrs["run"]["fail_reason"].startswith("diverged") for t in failed)
    assert any(t.state.name == "COMPLETE" for t in study.trials)


def _search(tmp_path, *args, cwd=ROOT, **popen):
    cmd = [sys.executable, str(ROOT / "search.py"), "--out", str(tmp_path), "--quiet", "--no-plots", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_killed_worker_and_resume_reach_exact_total(tmp_path):
    slow = ["--space", "quick", "--study", "k", "--trials", "3", "--pruner", "none", "--jobs", "1",
            "data=digits", "trainer.epochs=200", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[256,256]", "trainer.batch_size=16"]
    proc = _search(tmp_path, *slow)
    s = StudySettings(name="k", space=load_space("quick", CONF_DIR), trials=3, root=tmp_path)
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.2)
        if (s.dir / "journal.log").exists():
            running = [t for t in load(s).get_trials(deepcopy=False) if t.state.name == "RUNNING" and "worker" in t.user_attrs]
    assert running, "no trial started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running[0]
    assert load(s).trials[killed.number].state.name == "RUNNING"  # left behind by the dead worker
    # resume with short trials: the killed trial's parameters are re-run, the total is exact
    fast = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=3" for a in slow]
    fast = [a for a in fast if a != "layers.hidden=[256,256]"]
    _out, err = _search(tmp_path, "--allow-changes", *fast).communicate(timeout=300)
    assert "error" not in err.lower(), err
    study = load(s)
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == 3
    assert c["RUNNING"] == 0 and c["WAITING"] == 0
    stale = study.trials[killed.number]
    assert stale.state.name == "FAIL" and stale.user_attrs["run"]["fail_reason"].startswith("stale")
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert (s.dir / "trials" / f"{killed.number:04d}").exists()  # the dead trial's folder is kept


def test_bad_storage_url_is_one_clear_line(tmp_path):
    out, err = _search(tmp_path, "--trials", "1", "--storage", "postgresql://u:secret@127.0.0.1:1/db").communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--storage" in lines[0] and "secret" not in err
    _out, err = _search(tmp_path, "--trials", "1", "--storage", "redis://x").communicate(timeout=120)
    assert "error: --storage: unsupported URL" in err


def test_bad_space_fails_before_the_first_trial(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  optimizer.lrr: interval(0.1, 0.2)\n")
    proc = _search(tmp_path, "--trials", "2", "--space", str(bad))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "optimizer.lrr" in err and err.count("error:") == 1
    assert not (tmp_path / "bad" / "trials").exists()
    with pytest.raises(ConfigError, match="--sampler"):
        settings(tmp_path, 2, sampler="bayes")


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


def test_ctrl_c_requeues_the_running_trial(tmp_path):
    slow = ["--space", "quick", "--study", "c", "--trials", "2", "--pruner", "none", "--jobs", "1",
            "data=digits", "trainer.epochs=300", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[256,256]", "trainer.batch_size=16"]
    proc = _search(tmp_path, *slow)
    s = StudySettings(name="c", space=load_space("quick", CONF_DIR), trials=2, root=tmp_path)
    deadline, running = time.time() + 120, []
    while time.time() < deadline and not running:
        time.sleep(0.2)
        if (s.dir / "journal.log").exists():
            running = [t for t in load(s).trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
    assert running, "no trial started"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command to resume" in err and "Traceback" not in err
    study = load(s)
    interrupted = study.trials[running[0].number]
    assert interrupted.user_attrs["run"]["fail_reason"] == "stale: interrupted"
    assert counts(study)["STALE"] == 1 and counts(study)["WAITING"] == 1  # queued again, not counted
    fast = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=2" for a in slow]
    _search(tmp_path, "--allow-changes", *fast).communicate(timeout=300)
    study = load(s)
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == 2 and c["WAITING"] == 0
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == interrupted.number]
    assert len(retry) == 1 and retry[0].params == interrupted.params


def test_paused_worker_drops_its_taken_trial_and_goes_on(tmp_path):
    from sweeper.study import worker_loop

    slow = ["--space", "quick", "--study", "p", "--trials", "2", "--pruner", "none", "--jobs", "1",
            "data=digits", "trainer.epochs=60", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[128]", "trainer.batch_size=32"]
    proc = _search(tmp_path, *slow)
    s = StudySettings(name="p", space=load_space("quick", CONF_DIR), trials=2, root=tmp_path,
                      stale_after=0.5, pruner="none",
                      overrides=["data=digits", "trainer.epochs=2", "engine=numpy"])
    deadline, running = time.time() + 120, []
    while time.time() < deadline and not running:
        time.sleep(0.1)
        if (s.dir / "journal.log").exists():
            running = [t for t in load(s).trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
    assert running, "no trial started"
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)
        worker_loop(s)  # takes the paused worker's trial over as stale and finishes the study
    finally:
        proc.send_signal(signal.SIGCONT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"trial {running[0].number} was re-queued by another worker" in err and "Traceback" not in err
    c = counts(load(s))
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == 2 and c["RUNNING"] == 0 and c["STALE"] == 1


def test_a_fault_that_fails_every_trial_stops_the_study(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "trials").write_text("not a folder")  # every trial folder fails
    proc = _search(tmp_path, "--space", "quick", "--study", "q", "--trials", "5", *FAST)
    _out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1, err
    assert "trials" in lines[0] and "resume" in lines[0] and "Traceback" not in err
    s = StudySettings(name="q", space=load_space("quick", CONF_DIR), trials=5, root=tmp_path)
    c = counts(load(s))
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == 0  # the budget is not burnt


def test_the_same_failure_again_and_again_stops_the_study(tmp_path):
    space = parse_space({"params": {"optimizer": "choice(sgd, adam)"}})
    s = settings(tmp_path, 20, space=space, sampler="random",
                 overrides=FAST + ["data=file", "data.path=/nonexistent/data.csv"])
    from sweeper.study import STREAK, StudyAborted

    with pytest.raises(StudyAborted, match=f"{STREAK} trials in a row failed with: data.path: no such file"):
        run_study(s, progress=False)
    assert counts(load(s))["FAIL"] == STREAK


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


def test_best_config_reruns_to_the_trials_validation_result_and_ints_stay_ints(tmp_path):
    from omegaconf import OmegaConf

    from conf.schema import to_experiment
    from core.experiment import run

    s = settings(tmp_path, 4, sampler="random", pruner="none")
    study = run_study(s, progress=False)
    summary = write_report(study, s.dir, plots=False)
    cfg = to_experiment(OmegaConf.load(s.dir / "best" / "config.yaml"))
    again = run(cfg, plot=False, evaluate_test=False)
    assert again["val_accuracy"] == summary["val_accuracy"] and again["val_loss"] == pytest.approx(summary["val_loss"])
    line = summary["run_command"]
    assert line.startswith("python run.py ") and "engine.threads" not in line
    for name, value in summary["params"].items():
        if name in ("trainer.batch_size", "layers.depth") or name.startswith("layers.units_"):
            assert isinstance(value, int) and f"{value}.0" not in line, (name, value)
    trials = (s.dir / "trials.csv").read_text().splitlines()
    header = trials[0].split(",")
    for col in ("trainer.batch_size", "layers.depth", "layers.units_0", "layers.units_1"):
        i = header.index(col)
        assert all("." not in row.split(",")[i] for row in trials[1:]), col


def test_list_shows_every_study(tmp_path):
    run_study(settings(tmp_path, 2, sampler="random", pruner="none", name="one"), progress=False)
    run_study(settings(tmp_path, 3, sampler="random", pruner="none", name="two"), progress=False)
    out = subprocess.run([sys.executable, str(ROOT / "search.py"), "--list", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split()[:4] == ["study", "metric", "best", "complete"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"one", "two"}
    assert sum(int(x) for x in rows["two"][3:7]) == 3


# ---------------------------------------------------------------- search.py flags at their edges

CORES = os.cpu_count() or 1
MAX_JOBS = f"auto or 1 <= --jobs <= {4 * CORES}"  # four worker processes per core
MAX_SEED = "0 <= --seed <= 4294967295"  # 2**32 - 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--trials", "0"], "error: --trials: 0 is out of range; allowed: 1 <= --trials"),
        (["--trials", "-3"], "error: --trials: -3 is out of range"),
        (["--trials", "1e6"], "error: --trials: invalid int value: '1e6'"),
        (["--jobs", "0"], "error: --jobs: 0 is out of range; allowed: auto or 1 <= --jobs <= "),
        (["--jobs", "two"], "error: --jobs: 'two' is not allowed; allowed: auto or a whole number"),
        (["--cv", "0"], "error: --cv: '0' is not allowed; allowed: auto or a whole number 1..20"),
        (["--jobs", "99999"], f"error: --jobs: 99999 is out of range; allowed: {MAX_JOBS}"),
        (["--timeout", "-5"], "error: --timeout: -5.0 is out of range; allowed: 0.0 < --timeout"),
        (["--timeout", "0"], "error: --timeout: 0.0 is out of range"),
        (["--timeout", "nan"], "error: --timeout: nan is not a finite number"),
        (["--timeout", "inf"], "error: --timeout: inf is not a finite number"),
        (["--seed", "-1"], f"error: --seed: -1 is out of range; allowed: {MAX_SEED}\n"),
        (["--seed", str(2**32)], "error: --seed: 4294967296 is out of range"),
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
        ["--seed", str(2**32 - 1), "--jobs", "2"],  # sessions seed from (seed, session)
        ["--jobs", "auto", "--cv", "20"],
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


def test_a_deleted_best_trial_folder_is_retrained_not_dropped(tmp_path):
    import shutil

    s = settings(tmp_path, 3, sampler="random", pruner="none")
    study = run_study(s, progress=False)
    first = write_report(study, s.dir, plots=False)
    shutil.rmtree(study.trials[first["best_trial"]].user_attrs["run"]["dir"])
    again = write_report(study, s.dir, plots=False)
    assert "retrained from the trial's overrides" in again["note"]
    # training is deterministic for its seed: the same model, the same test result
    assert again["test_accuracy"] == first["test_accuracy"]
    assert again["test_loss"] == pytest.approx(first["test_loss"], rel=1e-6)
