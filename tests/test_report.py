"""sweeper.report: the best trial's config and run.py line reproduce it, integers stay integers,
a deleted best-trial folder is retrained."""

from __future__ import annotations

import pytest

from sweeper.report import write_report
from sweeper.study import run_study
from tests.studies import settings


def test_best_config_reruns_to_the_trials_validation_result_and_ints_stay_ints(tmp_path):
    from omegaconf import OmegaConf

    from app.compose import to_experiment
    from core.experiment import run

    s = settings(tmp_path, 4, sampler="random", pruner="none")
    study = run_study(s, progress=False)
    summary = write_report(study, s.dir, plots=False)
    cfg = to_experiment(OmegaConf.load(s.dir / "best" / "config.yaml"))
    again = run(cfg, evaluate_test=False)
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
