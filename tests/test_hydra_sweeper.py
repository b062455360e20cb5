"""hydra/sweeper=nnsweep under Hydra's multirun: the study of search.py, trials launched as
run.py jobs that report to the storage themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from sweeper.hydra_sweeper import split_arguments

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def multirun(tmp_path, *args, timeout=300):
    cmd = [sys.executable, "run.py", "-m", "hparams_search=quick",
           f"hydra.sweeper.root={tmp_path / 'studies'}", f"hydra.sweep.dir={tmp_path / 'runs'}",
           "engine=numpy", "hydra.sweeper.cv=1", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def load(tmp_path, name="quick"):
    from sweeper.storage import open_storage

    storage = open_storage(None, tmp_path / "studies" / name)
    return optuna.load_study(study_name=name, storage=storage)


def test_exact_total_pruning_resume_and_the_tables_of_search_py(tmp_path):
    proc = multirun(tmp_path, "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner=halving",
                    "hydra.sweeper.sampler=random", "trainer.epochs=8",
                    "trainer.early_stopping.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(tmp_path)
    states = [t.state.name for t in study.trials]
    assert len(states) == 8 and "RUNNING" not in states
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states  # per-epoch reports from inside the jobs reached the pruner
    for t in pruned:
        assert t.user_attrs["run"]["pruned_at"] == max(t.intermediate_values) < 8
    # resume to a larger total: only the missing trials run
    proc = multirun(tmp_path, "hydra.sweeper.n_trials=10", "hydra.sweeper.pruner=halving",
                    "hydra.sweeper.sampler=random", "trainer.epochs=8",
                    "trainer.early_stopping.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [t.number for t in load(tmp_path).trials] == list(range(10))
    out = tmp_path / "studies" / "quick"
    trials = pd.read_csv(out / "trials.csv")
    for col in ["number", "state", "value", "optimizer", "layers.depth", "best_epoch", "epochs_run",
                "pruned_at", "seconds", "fail_reason", "dir"]:
        assert col in trials.columns, col
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_command"].startswith("python run.py hparams_search=quick ")
    assert 0 <= summary["test_accuracy"] <= 1 and 0 <= summary["baseline"]["test_accuracy"] <= 1
    assert (out / "best" / "config.yaml").exists() and (out / "plots" / "history.png").exists()


def test_a_failing_job_is_a_failed_trial_and_the_sweep_goes_on(tmp_path):
    proc = multirun(tmp_path, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=random",
                    "hydra.sweeper.pruner=none", "trainer.epochs=2", "trainer.batch_size=choice(16,0)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(tmp_path)
    assert len(study.trials) == 6
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["trainer.batch_size"] == 0 for t in failed)
    assert all(t.user_attrs["run"]["fail_reason"].startswith("trainer.batch_size: 0 is out of range")
               for t in failed)
    assert any(t.state.name == "COMPLETE" for t in study.trials)


def test_command_line_lists_join_the_space():
    params, fixed = split_arguments(["optimizer=sgd,adam", "trainer.epochs=3",
                                     "optimizer.lr=tag(log, interval(1e-3, 1e-1))", "data=moons"])
    assert params == {"optimizer": "choice(sgd,adam)",
                      "optimizer.lr": "tag(log, interval(1e-3, 1e-1))"}
    assert fixed == ["trainer.epochs=3", "data=moons"]


def test_hparams_search_composes_and_help_lists_it():
    from app.compose import compose_experiment

    _, cfg = compose_experiment(["hparams_search=default"])
    assert (cfg.data.name, cfg.trainer.epochs) == ("digits", 40)
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "hparams_search: broad, default, lr, quick" in out and "search:" not in out.replace("hparams_search:", "")
