"""run.py -m and its Hydra callback app.multirun: job folders, results.csv, comparison plots.

The multirun is shared by several tests through a module fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from app.compose import compose_experiment
from app.multirun import labels, write_results
from core.config import OptimizerConfig, SchedulerConfig
from core.schedules import ReduceLROnPlateau, lr_at
from tests.cli import RUN_FILES, TINY, finish, is_png, run_app, start_app, taken_seconds

PLOTS = ["val_curves.png", "test_metric.png", "lr.png"]


# ---------------------------------------------------------------- multirun, one subprocess


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("app")
    sweep_dir = work / "sweep"
    proc = run_app(
        "-m",
        "optimizer=cosine,cyclic,plateau",
        *TINY,
        "trainer.epochs=4",
        "trainer.early_stopping.enabled=false",
        "scheduler.step_size=2",  # cyclic: peak at epoch 2
        f"hydra.sweep.dir={sweep_dir}",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc


def expected_lrs(summary: dict, metrics: pd.DataFrame) -> np.ndarray:
    """The lr each epoch starts with, from the job's saved config and the schedule formulas."""
    config = summary["config"]
    sch = SchedulerConfig(**config["scheduler"])
    opt = OptimizerConfig(**config["optimizer"])
    epochs = config["trainer"]["epochs"]
    if sch.name != "plateau":
        return np.array([lr_at(e - 1, sch, opt.lr, epochs) for e in metrics["epoch"]])
    plateau, lrs = ReduceLROnPlateau(sch, opt.lr), []
    for value in metrics[sch.monitor]:  # replay the monitored metric
        lrs.append(plateau.lr)
        plateau.step(value)
    return np.array(lrs)


@pytest.mark.slow
def test_multirun_job_folders_follow_their_schedules(sweep) -> None:
    sweep_dir, proc = sweep
    lr_columns = {}
    for job, strategy in enumerate(["cosine", "cyclic", "plateau"]):
        job_dir = sweep_dir / str(job)
        for name in RUN_FILES:
            assert (job_dir / name).is_file(), f"{job}/{name}"
        assert is_png(job_dir / "curves.png")
        summary = json.loads((job_dir / "summary.json").read_text())
        assert summary["config"]["scheduler"]["name"] == strategy
        assert summary["epochs_run"] == 4
        metrics = pd.read_csv(job_dir / "metrics.csv")
        assert list(metrics["epoch"]) == [1, 2, 3, 4]
        np.testing.assert_allclose(metrics["lr"], expected_lrs(summary, metrics), rtol=1e-12)
        lr_columns[strategy] = metrics["lr"].to_numpy()
        assert f"{job_dir.name}{os.sep}" in proc.stdout  # where the run went
    # cosine falls, cyclic climbs to its peak, plateau stays (val loss keeps falling here)
    cos, cyc, pla = lr_columns["cosine"], lr_columns["cyclic"], lr_columns["plateau"]
    assert np.all(np.diff(cos) < 0) and cyc[2] > cyc[0] and np.all(pla == pla[0])
    assert len({tuple(v) for v in lr_columns.values()}) == 3


@pytest.mark.slow
def test_multirun_results_table_and_plots(sweep) -> None:
    sweep_dir, proc = sweep
    results = pd.read_csv(sweep_dir / "results.csv")
    assert list(results["job"]) == [0, 1, 2]
    assert list(results["state"]) == ["completed"] * 3
    assert list(results["optimizer"]) == ["cosine", "cyclic", "plateau"]
    assert results["overrides"][0].startswith("optimizer=cosine data=moons")
    assert list(results["epochs_run"]) == [4, 4, 4]
    for row in results.itertuples():
        summary = json.loads((sweep_dir / str(row.job) / "summary.json").read_text())
        assert row.test_accuracy == pytest.approx(summary["test_accuracy"])
        assert row.best_epoch == summary["best_epoch"]
    for name in PLOTS:
        assert is_png(sweep_dir / name), name
    assert "results.csv" in proc.stdout


# ---------------------------------------------------------------- results of a sweep, in process


def fake_job(sweep_dir: Path, job: int, overrides: list[str], *, ok: bool) -> Path:
    """A job folder as Hydra leaves it; a finished one holds a real (tiny) run."""
    job_dir = sweep_dir / str(job)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if ok:
        cfg, _ = compose_experiment([*overrides, *TINY, "trainer=quick"])
        from run import train

        train(cfg, job_dir)
    else:
        (job_dir / "error.txt").write_text("optimizer.lr: -1.0 is out of range\n\ndetail")
    return job_dir


def test_failed_job_is_a_row_and_plots_show_the_rest(tmp_path: Path) -> None:
    fake_job(tmp_path, 0, ["optimizer.lr=0.01", "layers=small"], ok=True)
    fake_job(tmp_path, 1, ["optimizer.lr=-1", "layers=small"], ok=False)
    fake_job(tmp_path, 10, ["optimizer.lr=0.02", "layers=small"], ok=True)  # 10 sorts after 1
    results = write_results(tmp_path)
    saved = pd.read_csv(tmp_path / "results.csv")
    assert list(saved["job"]) == [0, 1, 10]
    assert list(saved["state"]) == ["completed", "failed", "completed"]
    assert list(saved["optimizer.lr"]) == [0.01, -1.0, 0.02]
    assert saved.loc[1, "error"] == "optimizer.lr: -1.0 is out of range"
    assert np.isnan(saved.loc[1, "test_accuracy"]) and saved.loc[0, "epochs_run"] == 3
    assert labels(results) == {
        0: "0: optimizer.lr=0.01",
        1: "1: optimizer.lr=-1",
        10: "10: optimizer.lr=0.02",
    }
    for name in PLOTS:
        assert is_png(tmp_path / name), name


@pytest.mark.slow
def test_multiruns_started_together_get_their_own_sweep_folders(tmp_path: Path) -> None:
    taken = taken_seconds(tmp_path / "outputs" / "multiruns")
    quiet = ["hydra.callbacks.multirun_results.plots=false"]
    finish(
        [
            start_app("-m", *TINY, "trainer=quick", f"trainer.seed={a},{b}", *quiet, cwd=tmp_path)
            for a, b in [(1, 2), (3, 4)]
        ]
    )
    for folder in taken:
        assert [p.name for p in folder.iterdir()] == ["other.txt"], folder
    sweeps = sorted(p.parent for p in (tmp_path / "outputs" / "multiruns").glob("*/*/results.csv"))
    assert len(sweeps) == 2
    seeds = []
    for sweep_dir in sweeps:
        results = pd.read_csv(sweep_dir / "results.csv")
        assert list(results["job"]) == [0, 1] and list(results["state"]) == ["completed"] * 2
        seeds.append(
            sorted(
                json.loads((sweep_dir / str(j) / "summary.json").read_text())["config"]["trainer"][
                    "seed"
                ]
                for j in (0, 1)
            )
        )
    assert sorted(seeds) == [[1, 2], [3, 4]]


@pytest.mark.slow
def test_multirun_with_a_failing_job_records_it_and_exits_1(tmp_path: Path) -> None:
    proc = run_app(
        "-m",
        "optimizer.lr=-1,0.01",
        *TINY,
        "trainer=quick",
        "hydra.sweep.dir=sweep",
        "hydra.callbacks.multirun_results.plots=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "error: optimizer.lr: -1.0 is out of range" in proc.stderr
    sweep_dir = tmp_path / "sweep"
    results = pd.read_csv(sweep_dir / "results.csv")
    assert list(results["state"]) == ["failed", "completed"]
    assert (sweep_dir / "0" / "error.txt").read_text().startswith("optimizer.lr: -1.0 is out")
    assert (sweep_dir / "1" / "model.npz").is_file()
    assert not any((sweep_dir / name).exists() for name in PLOTS)  # plots=false


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(tmp_path: Path) -> None:
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[parallel]'"
    )
    proc = run_app(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "layers=small,wide",
        *TINY,
        "trainer=quick",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert list(results["layers"]) == ["small", "wide"]
    assert list(results["state"]) == ["completed"] * 2
