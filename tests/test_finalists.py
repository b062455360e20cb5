"""sweeper.finalists: the best hold-out trials trained again with K folds, the pick among
them, resuming, dead workers, and how --cv/--finalists combine."""

from __future__ import annotations

import json
import os

import numpy as np
import optuna
import pandas as pd
import pytest

from app.compose import compose_experiment
from core.config import ConfigError
from sweeper import settings as settings_mod
from sweeper.finalists import SOURCE, finalist_settings, load_finalists, run_finalists
from sweeper.report import write_report
from sweeper.settings import AUTO_FINALISTS, AUTO_FOLDS, plan_cv
from sweeper.study import run_study
from tests.studies import flag_error, load, settings


def _ranked_from_table(trials: pd.DataFrame, n: int) -> list[int]:
    """The n best COMPLETE trials by value, then val_loss, then number, from trials.csv."""
    done = trials[trials.state == "COMPLETE"].copy()
    done["neg"] = -done["value"]
    return done.sort_values(["neg", "val_loss", "number"])["number"].astype(int).tolist()[:n]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """12 hold-out trials, then 3 finalists with 3 folds, and the report."""
    tmp = tmp_path_factory.mktemp("finalists")
    s = settings(tmp, 12, finalists=3, finalist_folds=3)
    study = run_study(s, progress=False)
    fstudy = run_finalists(s, study, progress=False)
    summary = write_report(study, s.dir, plots=False)
    return s, study, fstudy, summary


def test_finalists_are_the_best_hold_out_trials(searched):
    s, study, fstudy, _ = searched
    trials = pd.read_csv(s.dir / "trials.csv")
    expected = _ranked_from_table(trials, 3)
    finalists = fstudy.get_trials(deepcopy=False)
    assert sorted(t.user_attrs[SOURCE] for t in finalists) == sorted(expected)
    # queued longest first: by the source trial's training time
    seconds = trials.set_index("number")["train_seconds"]
    queued = [seconds[t.user_attrs[SOURCE]] for t in finalists]
    assert queued == sorted(queued, reverse=True)
    by_number = {t.number: t for t in study.trials}
    for t in finalists:
        assert t.state.name == "COMPLETE"
        assert t.params == by_number[t.user_attrs[SOURCE]].params  # the same configuration
        # trained with 3 folds, unpruned, in the finalists' own folders
        folder = s.dir / "finalists" / "trials" / f"{t.number:04d}"
        assert sorted(p.name for p in folder.glob("model_fold*.npz")) == [
            f"model_fold{i}.npz" for i in range(3)]
        metrics = pd.read_csv(folder / "metrics.csv")
        best = metrics[metrics.epoch == t.user_attrs["run"]["best_epoch"]].iloc[0]
        # the value is the mean of the folds' validation accuracies at the best epoch
        folds = [best[f"val_accuracy_fold{i}"] for i in range(3)]
        assert t.value == pytest.approx(np.mean(folds), abs=1e-12)
    assert not (s.dir / "finalists" / "trials" / "0003").exists()
    # trials.csv shows each finalist's fold mean on its source trial's row
    shown = trials.dropna(subset=["finalist_value"]).set_index("number")["finalist_value"]
    assert shown.to_dict() == pytest.approx({t.user_attrs[SOURCE]: t.value for t in finalists})


def test_pick_is_the_best_finalist_with_a_fold_ensemble_and_a_3_fold_baseline(searched):
    s, study, fstudy, summary = searched
    rows = sorted(fstudy.get_trials(deepcopy=False),
                  key=lambda t: (-t.value, t.user_attrs["run"]["val_loss"], t.number))
    assert summary["best_trial"] == rows[0].user_attrs[SOURCE]
    assert summary["finalist_trial"] == rows[0].number
    assert summary["value"] == pytest.approx(rows[0].value)
    assert summary["holdout_value"] == pytest.approx(study.trials[summary["best_trial"]].value)
    assert summary["cv_folds"] == 3 and summary["finalists"] == 3
    assert summary["final_model"] == "ensemble of 3 fold models"
    assert len(list((s.dir / "best").glob("model_fold*.npz"))) == 3
    base = summary["baseline"]
    assert base["final_model"] == "ensemble of 3 fold models"
    assert json.loads((s.dir / "baseline" / "summary.json").read_text())["cv_folds"] == 3
    saved = json.loads((s.dir / "summary.json").read_text())
    assert saved["best_trial"] == summary["best_trial"]


def test_resume_trains_only_new_leaders(searched):
    s, study, fstudy, _ = searched
    before = {t.user_attrs[SOURCE] for t in fstudy.trials}
    run_finalists(s, study, progress=False)  # nothing new: no finalist trains again
    again = load_finalists(study)
    assert len(again.trials) == 3
    s.trials = 20
    study = run_study(s, progress=False)
    fstudy = run_finalists(s, study, progress=False)
    now_top = {t.number for t in _top(study, 3)}
    sources = [t.user_attrs[SOURCE] for t in fstudy.trials]
    assert len(sources) == len(set(sources))  # each configuration once
    assert set(sources) == before | now_top
    assert all(t.state.name == "COMPLETE" for t in fstudy.trials)


def _top(study, n):
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    return sorted(done, key=lambda t: (-t.value, t.user_attrs["run"]["val_loss"], t.number))[:n]


def test_a_dead_workers_finalist_runs_again_with_its_source(tmp_path):
    s = settings(tmp_path, 6, finalists=2, finalist_folds=2)
    study = run_study(s, progress=False)
    from sweeper.claim import Claimer
    from sweeper.finalists import enqueue
    from sweeper.settings import create_study

    fin = finalist_settings(s)
    fin.trials = enqueue(s, study)
    fstudy, storage = create_study(fin)
    trial = Claimer(fstudy, storage, fin).claim()  # claimed by a worker that then died
    source = fstudy.trials[trial.number].user_attrs[SOURCE]
    trial.set_user_attr("worker", f"{os.uname().nodename}:999999999")  # no such process
    fstudy = run_finalists(s, study, progress=False)
    states = [(t.state.name, t.user_attrs.get(SOURCE)) for t in fstudy.trials]
    assert states[trial.number][0] == "FAIL"  # shown as STALE
    retry = [t for t in fstudy.trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].user_attrs[SOURCE] == source
    assert sum(st == "COMPLETE" for st, _ in states) == 2


def test_report_without_finalists_yet_keeps_the_hold_out_pick(tmp_path):
    s = settings(tmp_path, 4, finalists=2, finalist_folds=2)
    study = run_study(s, progress=False)  # interrupted before the finalists
    summary = write_report(study, s.dir, plots=False)
    assert "no finalist completed yet" in summary["note"]
    assert summary["cv_folds"] == 1 and summary["final_model"] == "single model"
    assert load_finalists(load(s)) is None


def test_plan_cv(monkeypatch):
    def cfg():
        return compose_experiment(["data=moons"])[1]

    assert plan_cv("auto", "auto", cfg, 1) == (1, AUTO_FINALISTS)  # small data
    assert plan_cv("auto", "auto", cfg, 2) == (AUTO_FOLDS, 0)  # a front: every trial K-fold
    assert plan_cv("auto", 4, cfg, 1) == (1, 4)
    assert plan_cv(1, "auto", cfg, 1) == (1, 0)  # an explicit hold-out search stays plain
    assert plan_cv(1, 7, cfg, 1) == (1, 7)
    assert plan_cv(5, "auto", cfg, 1) == (5, 0)
    assert plan_cv(3, "auto", lambda: pytest.fail("composed for an explicit --cv"), 1) == (3, 0)
    monkeypatch.setattr(settings_mod, "small_data", lambda cfg: False)
    assert plan_cv("auto", "auto", cfg, 1) == (1, 0)  # large data: the hold-out split is trusted
    assert plan_cv("auto", "auto", cfg, 2) == (1, 0)
    with pytest.raises(ConfigError, match=r"^--finalists: 3 with --cv 5: every trial is already"):
        plan_cv(5, 3, cfg, 1)
    with pytest.raises(ConfigError, match=r"^--finalists: 3 with several objectives"):
        plan_cv(1, 3, cfg, 2)


@pytest.mark.parametrize("flags, expected", [
    (["--finalists", "-1"], "error: --finalists: '-1' is not allowed; allowed: auto or a whole number 0..1,000"),
    (["--finalists", "ten"], "error: --finalists: 'ten' is not allowed; allowed: auto or a whole number 0..1,000"),
])
def test_bad_finalists_flag(tmp_path, monkeypatch, capsys, flags, expected):
    assert flag_error(tmp_path, monkeypatch, capsys, flags).strip() == expected


@pytest.mark.parametrize("flags, expected", [
    (["--cv", "5", "--finalists", "3"], "error: --finalists: 3 with --cv 5: every trial is already cross-validated"),
    (["--cv", "1", "--finalists", "3", "--finalist-folds", "1"], "error: --finalist-folds: 1 is out of range"),
])
def test_bad_finalist_settings_exit_2(tmp_path, monkeypatch, capsys, flags, expected):
    from search import main

    monkeypatch.chdir(tmp_path)
    code = main(["--out", str(tmp_path / "s"), "--trials", "1", "--quiet", *flags, "data=moons"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(expected), err
    assert err.count("\n") == 1
    assert not (tmp_path / "s").exists()  # refused before anything was created


def test_finalists_of_a_study_are_listed_once(searched):
    study = searched[1]
    names = [x.study_name for x in optuna.get_all_study_summaries(study._storage)]
    assert sorted(names) == ["s", "s.cv3"]


def test_search_py_prints_the_finalists_pick(tmp_path):
    from tests.studies import FAST, search_py

    proc = search_py(tmp_path, "--space", "quick", "--trials", "6", "--jobs", "1",
                     "--finalists", "2", "--finalist-folds", "2", *FAST)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "quick" / "summary.json").read_text())
    assert (f"val_accuracy = {summary['value']:.4f} (2-fold CV mean, best of 2 finalists; "
            f"validation split {summary['holdout_value']:.4f})") in out
    assert "[ensemble of 2 fold models, n=" in out
