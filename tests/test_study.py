"""sweeper.study end to end on a small space: exact counts, resume, workers, kills, pauses,
pruning, failures that stop a study, tables and plots."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest

from app.compose import CONF_DIR
from sweeper.claim import counts
from sweeper.report import write_report
from sweeper.space import load_space, parse_space
from sweeper.study import StudySettings, run_study
from tests.studies import FAST, load, running_trials, search_py, settings, states


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


def test_killed_worker_and_resume_reach_exact_total(tmp_path):
    slow = ["--space", "quick", "--study", "k", "--trials", "3", "--pruner", "none", "--jobs", "1",
            "data=digits", "trainer.epochs=200", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[256,256]", "trainer.batch_size=16"]
    proc = search_py(tmp_path, *slow)
    s = StudySettings(name="k", space=load_space("quick", CONF_DIR), trials=3, root=tmp_path)
    running = running_trials(s)
    assert running, "no trial started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running[0]
    assert load(s).trials[killed.number].state.name == "RUNNING"  # left behind by the dead worker
    # resume with short trials: the killed trial's parameters are re-run, the total is exact
    fast = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=3" for a in slow]
    fast = [a for a in fast if a != "layers.hidden=[256,256]"]
    _out, err = search_py(tmp_path, "--allow-changes", *fast).communicate(timeout=300)
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


def test_ctrl_c_requeues_the_running_trial(tmp_path):
    slow = ["--space", "quick", "--study", "c", "--trials", "2", "--pruner", "none", "--jobs", "1",
            "data=digits", "trainer.epochs=300", "trainer.early_stopping.enabled=false", "engine=numpy",
            "layers.hidden=[256,256]", "trainer.batch_size=16"]
    proc = search_py(tmp_path, *slow)
    s = StudySettings(name="c", space=load_space("quick", CONF_DIR), trials=2, root=tmp_path)
    running = running_trials(s)
    assert running, "no trial started"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command to resume" in err and "Traceback" not in err
    study = load(s)
    interrupted = study.trials[running[0].number]
    assert interrupted.user_attrs["run"]["fail_reason"] == "stale: interrupted"
    assert counts(study)["STALE"] == 1 and counts(study)["WAITING"] == 1  # queued again, not counted
    fast = [a if not a.startswith("trainer.epochs=") else "trainer.epochs=2" for a in slow]
    search_py(tmp_path, "--allow-changes", *fast).communicate(timeout=300)
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
    proc = search_py(tmp_path, *slow)
    s = StudySettings(name="p", space=load_space("quick", CONF_DIR), trials=2, root=tmp_path,
                      stale_after=0.5, pruner="none",
                      overrides=["data=digits", "trainer.epochs=2", "engine=numpy"])
    running = running_trials(s, poll=0.1)
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
    proc = search_py(tmp_path, "--space", "quick", "--study", "q", "--trials", "5", *FAST)
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


def test_same_seed_one_worker_same_study(tmp_path):
    """--jobs 1 and the same --seed: the same points and values run to run, TPE past its
    random start (12 > 10 startup trials) included."""
    runs = []
    for name in ("a", "b"):
        study = run_study(settings(tmp_path, 12, name=name, seed=7), progress=False)
        runs.append([(t.state.name, t.params, t.value) for t in study.trials])
    assert runs[0] == runs[1]
    assert len({str(params) for _, params, _ in runs[0]}) == 12


def test_a_failing_while_waiting_does_not_stop_the_study(tmp_path):
    """run_study's head start for later work is optional: if it raises, the study goes on
    and reaches its exact total."""
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("no plotting here")

    # two quick trials: this process finishes both while the spawned worker still imports
    # (~1 s), so it waits for it, and the head start runs, once
    s = settings(tmp_path, 2, jobs=2)
    study = run_study(s, progress=False, while_waiting=broken)
    assert len(study.trials) == 2
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert calls == [1]
