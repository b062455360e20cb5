"""sweeper.objectives and sweeper.pareto: objective specs and bad ones, constraints, the
Pareto flag against a brute-force front, the hopeless-trial rule, a small multi-objective
study's tables, summary and plot."""

from __future__ import annotations

import itertools
import json

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from core.config import ConfigError
from sweeper.objectives import (
    Bound,
    Goal,
    HopelessRule,
    parse_constraint,
    parse_goals,
    pareto_mask,
)
from sweeper.study import run_study
from tests.studies import FAST, flag_error, load, settings

# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("val_accuracy", [("val_accuracy", "maximize")]),
        ("val_loss", [("val_loss", "minimize")]),
        ("val_accuracy:max,n_params:min", [("val_accuracy", "maximize"), ("n_params", "minimize")]),
        (" val_loss:min , latency_us:min ", [("val_loss", "minimize"), ("latency_us", "minimize")]),
        ("val_accuracy:maximize,train_seconds:minimize,latency_us_b256:min",
         [("val_accuracy", "maximize"), ("train_seconds", "minimize"), ("latency_us_b256", "minimize")]),
        (["val_accuracy:max", "n_params:min"], [("val_accuracy", "maximize"), ("n_params", "minimize")]),
    ],
)
def test_objective_specs(spec, expected):
    assert [(g.name, g.direction) for g in parse_goals(spec)] == expected


def test_a_single_metric_takes_the_direction_flag():
    assert parse_goals("val_loss", direction="maximize") == (Goal("val_loss", "maximize"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n_params<=20000", Bound("n_params", "<=", 20000.0)),
        (" latency_us <= 12.5 ", Bound("latency_us", "<=", 12.5)),
        ("val_accuracy>=0.9", Bound("val_accuracy", ">=", 0.9)),
    ],
)
def test_constraints_and_their_violation(text, expected):
    b = parse_constraint(text)
    assert b == expected
    # Optuna's convention: <= 0 feasible, > 0 the size of the violation
    assert b.violation(expected.limit) == 0
    worse = expected.limit + (1 if expected.op == "<=" else -1)
    assert b.violation(worse) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--metric", "val_acc:max"], "error: --metric: unknown metric 'val_acc' in 'val_acc:max'; allowed: val_loss,"),
        (["--metric", "val_accuracy:up,n_params:min"], "error: --metric: direction 'up' of val_accuracy is not allowed; allowed: max, min"),
        (["--metric", "val_accuracy:max,n_params:min", "--direction", "maximize"],
         "error: --direction: 'maximize' with several objectives; allowed: one direction per objective"),
        (["--metric", "val_loss:min", "--direction", "maximize"], "error: --direction: 'maximize' contradicts --metric"),
        (["--metric", "n_params:min,val_accuracy:max"], "error: --metric: the first objective is 'n_params'"),
        (["--metric", "val_accuracy,val_accuracy"], "error: --metric: val_accuracy is named twice"),
        (["--metric", ""], "error: --metric: unknown metric ''"),
        (["--constraint", "n_params<20000"], "error: --constraint: 'n_params<20000' is malformed; allowed: NAME<=NUMBER"),
        (["--constraint", "n_params=20000"], "error: --constraint: 'n_params=20000' is malformed"),
        (["--constraint", "size<=3"], "error: --constraint: unknown metric 'size' in 'size<=3'"),
        (["--constraint", "n_params<=1e4", "--constraint", "latency_us<=nan"],
         "error: --constraint: 'nan' in 'latency_us<=nan' is not a finite number"),
    ],
)
def test_bad_specs_are_one_line_and_status_2(tmp_path, monkeypatch, capsys, flags, expected):
    err = flag_error(tmp_path, monkeypatch, capsys, flags)
    assert err.startswith(expected), err
    assert not (tmp_path / "studies").exists()


def test_settings_refuse_what_cannot_serve_several_objectives(tmp_path):
    goals = parse_goals("val_accuracy:max,n_params:min")
    with pytest.raises(ConfigError, match="--pruner: hyperband does not apply to several objectives"):
        settings(tmp_path, 2, goals=goals, pruner="hyperband")
    with pytest.raises(ConfigError, match="--sampler: unknown value 'cmaes'"):
        settings(tmp_path, 2, goals=goals, sampler="cmaes")


def test_a_space_file_takes_several_objectives_and_constraints(tmp_path):
    from sweeper.space import parse_space

    space = parse_space({"params": {"optimizer": "choice(sgd, adam)"},
                         "metric": ["val_accuracy:max", "n_params:min"], "constraints": ["n_params<=500"]})
    assert space.metric == "val_accuracy:max,n_params:min" and space.constraints == ["n_params<=500"]
    with pytest.raises(ConfigError, match=r"search.constraints: 'n_params=5' is malformed"):
        parse_space({"params": {"optimizer": "choice(sgd, adam)"}, "constraints": ["n_params=5"]})
    with pytest.raises(ConfigError, match=r"search.metric: unknown metric 'size'"):
        parse_space({"params": {"optimizer": "choice(sgd, adam)"}, "metric": "val_loss:min,size:min"})


# ---------------------------------------------------------------- the Pareto front


def brute_force_front(rows: list[tuple], maximize: list[bool]) -> set[int]:
    """Indices of the rows no other row beats: written out plainly, as the definition says."""
    front = set()
    for i, a in enumerate(rows):
        beaten = False
        for j, b in enumerate(rows):
            if i == j:
                continue
            at_least_as_good = all((bv >= av) if mx else (bv <= av) for av, bv, mx in zip(a, b, maximize))
            better_once = any((bv > av) if mx else (bv < av) for av, bv, mx in zip(a, b, maximize))
            if at_least_as_good and better_once:
                beaten = True
        if not beaten:
            front.add(i)
    return front


def test_pareto_flag_against_a_hand_made_table():
    # (val_accuracy max, n_params min): 2 and 3 tie exactly (both stay), 4 is beaten by 0
    rows = [(0.95, 1000), (0.97, 5000), (0.90, 300), (0.90, 300), (0.94, 1200), (0.99, 5000)]
    mask = pareto_mask(np.array(rows), [True, False])
    assert set(np.flatnonzero(mask)) == {0, 2, 3, 5} == brute_force_front(rows, [True, False])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [[True, False], [False, False], [True, False, False]])
def test_pareto_flag_against_brute_force(seed, maximize):
    rng = np.random.default_rng(seed)
    # few distinct values per column: many ties, as accuracy on a few hundred samples has
    rows = [tuple(float(v) for v in r) for r in rng.integers(0, 6, size=(40, len(maximize)))]
    mask = pareto_mask(np.array(rows), maximize)
    assert set(np.flatnonzero(mask)) == brute_force_front(rows, maximize)


# ---------------------------------------------------------------- stopping hopeless trials


def done(acc_at: dict[int, float], n_params: int, *, infeasible: bool = False):
    """A COMPLETE trial of (val_accuracy max, n_params min) with these epoch values."""
    attrs = {"constraints:n_params<=1000": 5.0} if infeasible else {}
    final = acc_at[max(acc_at)]
    return create_trial(state=TrialState.COMPLETE, values=[final, n_params], intermediate_values=acc_at,
                        system_attrs=attrs, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)})


RULE = HopelessRule(("maximize", "minimize"), percentile=50.0, n_min=5, warmup=2)
# five complete trials of 1,000 parameters whose accuracy at epoch 3 is 0.80 .. 0.90
PEERS = [done({1: 0.5, 2: 0.7, 3: a}, 1000) for a in (0.80, 0.82, 0.85, 0.88, 0.90)]


def test_a_trial_behind_the_median_of_the_trials_that_would_dominate_it_stops():
    # 2,000 parameters: every peer is smaller; at epoch 3 it is below their median (0.85)
    assert RULE.stop(PEERS, 3, best=0.84, known=[2000])
    assert not RULE.stop(PEERS, 3, best=0.86, known=[2000])
    assert not RULE.stop(PEERS, 1, best=0.10, known=[2000])  # warm-up epoch
    assert not RULE.stop(PEERS[:4], 3, best=0.10, known=[2000])  # fewer than n_min peers


def test_a_smaller_trial_has_no_peers_and_is_never_stopped():
    # the small end of the front: 500 parameters, far less accurate, never stopped
    assert not RULE.stop(PEERS, 3, best=0.30, known=[500])
    assert RULE.stop(PEERS, 3, best=0.30, known=[1000])  # as large as they are: stopped


def test_infeasible_trials_are_no_peers():
    bad = [done({3: a}, 1000, infeasible=True) for a in (0.80, 0.82, 0.85, 0.88, 0.90)]
    assert not RULE.stop(bad, 3, best=0.10, known=[2000])


def test_the_rule_needs_every_other_objective_known_before_training():
    assert HopelessRule.for_study(parse_goals("val_accuracy:max,n_params:min"), "median").percentile == 50
    assert HopelessRule.for_study(parse_goals("val_accuracy:max,n_params:min"), "percentile").percentile == 25
    assert HopelessRule.for_study(parse_goals("val_accuracy:max,n_params:min"), "none") is None
    assert HopelessRule.for_study(parse_goals("val_accuracy:max,latency_us:min"), "median") is None


# ---------------------------------------------------------------- a small study


def test_constrained_multi_objective_study_tables_summary_and_plot(tmp_path):
    goals = parse_goals("val_accuracy:max,n_params:min")
    limit = 200  # the quick space's networks on moons hold about 50 to 1,500 parameters
    s = settings(tmp_path, 10, goals=goals, constraints=(parse_constraint(f"n_params<={limit}"),),
                 sampler="tpe", pruner="median")
    from sweeper.report import write_report

    study = run_study(s, progress=False)
    summary = write_report(study, s.dir, plots=True)
    trials = pd.read_csv(s.dir / "trials.csv")
    complete = trials[trials["state"] == "COMPLETE"]
    assert len(complete) >= 5
    # one column per objective, and the constraint's verdict from the table's own n_params
    assert {"val_accuracy", "n_params", "feasible", "pareto"} <= set(trials.columns)
    assert (complete["feasible"] == (complete["n_params"] <= limit)).all()
    assert (~complete["feasible"]).any() and complete["feasible"].any(), complete["n_params"].tolist()
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert list(t.constraints.values()) == [pytest.approx(t.values[1] - limit)]
    # the pareto flag: the brute-force front of the feasible complete rows
    ok = complete[complete["feasible"]].reset_index(drop=True)
    rows = list(zip(ok["val_accuracy"], ok["n_params"]))
    expected = {int(ok["number"][i]) for i in brute_force_front(rows, [True, False])}
    assert set(trials.loc[trials["pareto"], "number"]) == expected
    saved = json.loads((s.dir / "summary.json").read_text())
    assert {m["trial"] for m in saved["pareto"]} == expected
    for m in saved["pareto"]:  # each evaluated once on test, its config and run line kept
        assert 0 <= m["test_accuracy"] <= 1 and m["run_command"].startswith("python run.py ")
        assert m["final_model_n_params"] == m["values"]["n_params"]  # hold-out trials: one network
        assert (s.dir / "pareto" / f"{m['trial']:04d}" / "config.yaml").exists()
    accs = [m["values"]["val_accuracy"] for m in saved["pareto"]]
    assert accs == sorted(accs, reverse=True)  # best first objective first
    assert saved["baseline"]["test_accuracy"] is not None
    # every trial reported its first objective each epoch (curves, and the rule's input)
    epochs = pd.read_csv(s.dir / "epochs.csv")
    assert set(epochs["trial"]) >= set(complete["number"])
    png = s.dir / "plots" / "pareto.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("history_val_accuracy", "history_n_params", "params_n_params", "curves"):
        assert (s.dir / "plots" / f"{name}.png").exists(), name
    assert summary["n_pareto"] == len(expected)


def test_resume_with_another_metric_spec_or_constraint_is_refused(tmp_path):
    goals = parse_goals("val_accuracy:max,n_params:min")
    bound = (parse_constraint("n_params<=500"),)
    run_study(settings(tmp_path, 2, goals=goals, constraints=bound, sampler="random"), progress=False)
    other = parse_goals("val_accuracy:max,train_seconds:min")
    with pytest.raises(ConfigError, match=r"--metric: study 's' was run with 'val_accuracy:max,n_params:min'"):
        run_study(settings(tmp_path, 3, goals=other, constraints=bound, sampler="random"), progress=False)
    with pytest.raises(ConfigError, match=r"--constraint: study 's' was run with"):
        run_study(settings(tmp_path, 3, goals=goals, sampler="random"), progress=False)
    with pytest.raises(ConfigError, match=r"--metric: study 's' exists with 2 objective\(s\)"):
        run_study(settings(tmp_path, 3, sampler="random"), progress=False)
    study = run_study(settings(tmp_path, 3, goals=goals, constraints=bound, sampler="nsga2"), progress=False)
    assert len(load(settings(tmp_path, 3)).trials) == 3 == len(study.trials)


def test_list_shows_the_size_of_the_front(tmp_path):
    from sweeper.listing import format_rows, study_rows

    goals = parse_goals("val_accuracy:max,n_params:min")
    study = run_study(settings(tmp_path, 3, goals=goals, sampler="random", name="mo"), progress=False)
    rows = study_rows(tmp_path)
    assert rows[0]["metric"] == "val_accuracy:max,n_params:min"
    assert rows[0]["best"] == f"front of {len(study.best_trials)}"  # Optuna's own front
    assert "front of" in format_rows(rows)


def test_brute_force_helper_is_itself_right():
    # every row of a chain is beaten by the next; the last survives
    assert brute_force_front([(1, 5), (2, 5), (3, 5)], [True, False]) == {2}
    assert brute_force_front(list(itertools.product([1, 2], [1, 2])), [True, False]) == {2}


def test_optuna_study_directions_match_the_goals(tmp_path):
    goals = parse_goals("val_loss:min,n_params:min")
    s = settings(tmp_path, 1, goals=goals, sampler="random")
    assert (s.metric, s.direction) == ("val_loss", "minimize")  # what trials report
    study = run_study(s, progress=False)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert isinstance(study, optuna.Study)


def test_stopped_trials_are_pruned_and_tpe_goes_on_sampling(tmp_path, monkeypatch):
    # Optuna's TPE scores a pruned trial's last reported value with study.direction, which a
    # multi-objective study refuses: stopped trials keep their curve out of the storage
    calls = []

    def stop_odd_trials_at_epoch_2(self, trials, epoch, best, known):
        calls.append(epoch)
        return epoch == 2 and len(trials) % 2 == 1

    monkeypatch.setattr(HopelessRule, "stop", stop_odd_trials_at_epoch_2)
    goals = parse_goals("val_accuracy:max,n_params:min")
    s = settings(tmp_path, 14, goals=goals, sampler="tpe", pruner="median")  # TPE from trial 10
    from sweeper.report import write_report

    study = run_study(s, progress=False)
    got = [t.state.name for t in study.trials]
    assert got.count("PRUNED") >= 2 and "FAIL" not in got, got
    assert calls
    for t in study.trials:  # complete trials keep their curve in the storage, stopped ones not
        assert bool(t.intermediate_values) == (t.state.name == "COMPLETE")
        if t.state.name == "PRUNED":
            assert t.user_attrs["run"]["pruned_at"] == 2
    write_report(study, s.dir, plots=False)
    epochs = pd.read_csv(s.dir / "epochs.csv")
    pruned = epochs[epochs["state"] == "PRUNED"]
    assert set(pruned["trial"]) == {t.number for t in study.trials if t.state.name == "PRUNED"}
    assert pruned.groupby("trial")["epoch"].max().eq(2).all()


def test_the_hydra_sweepers_tell_measures_sets_constraints_and_tells_the_values(tmp_path):
    # what sweeper.hydra_sweeper does when a job of a multi-objective study finished
    from app.compose import compose_experiment
    from core.experiment import run
    from sweeper.claim import Claimer
    from sweeper.objectives import tell_goals
    from sweeper.settings import create_study

    goals = parse_goals("val_accuracy:max,latency_us:min")
    s = settings(tmp_path, 1, goals=goals, constraints=(parse_constraint("n_params<=10"),))
    study, storage = create_study(s)
    claimer = Claimer(study, storage, s)
    trial = claimer.claim()
    overrides = s.space.sample(trial) + s.overrides
    summary = run(compose_experiment(overrides)[1], out_dir=tmp_path / "job", evaluate_test=False)
    job = {k: summary[k] for k in ("val_accuracy", "n_params", "train_seconds", "engine")}
    storage.set_trial_user_attr(claimer.trial_id(trial.number), "run", {**job, "dir": str(tmp_path / "job")})
    tell_goals(claimer, trial, storage.get_trial(claimer.trial_id(trial.number)))
    t = load(s).trials[0]
    assert t.state.name == "COMPLETE" and t.values[0] == summary["val_accuracy"]
    assert t.values[1] == t.user_attrs["run"]["latency_us"] > 0  # measured on the job's network
    assert t.constraints == {"n_params<=10": summary["n_params"] - 10}  # infeasible


def test_a_constrained_single_objective_study_picks_a_feasible_trial(tmp_path):
    from sweeper.report import write_report

    limit = 200
    s = settings(tmp_path, 8, constraints=(parse_constraint(f"n_params<={limit}"),), sampler="random",
                 pruner="none")
    study = run_study(s, progress=False)
    assert len(study.directions) == 1
    summary = write_report(study, s.dir, plots=False)
    trials = pd.read_csv(s.dir / "trials.csv").set_index("number")
    complete = trials[trials["state"] == "COMPLETE"]
    assert (complete["feasible"] == (complete["n_params"] <= limit)).all()
    feasible = complete[complete["feasible"]]
    assert len(feasible) < len(complete), "the bound should cut some trials"
    assert summary["value"] == feasible["value"].max()
    assert trials.loc[summary["best_trial"], "n_params"] <= limit


def test_the_pick_of_a_constrained_study_is_the_best_feasible_trial():
    from sweeper.final import select_best

    study = optuna.create_study(direction="maximize")
    for value, violation in [(0.95, 3.0), (0.90, 0.0), (0.93, 1.0), (0.85, -2.0)]:
        study.add_trial(create_trial(value=value, system_attrs={"constraints:n_params<=100": violation},
                                     params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                     user_attrs={"run": {"val_loss": 0.1}}))
    assert select_best(study).value == 0.90  # 0.95 and 0.93 break the bound


def test_search_py_prints_the_front(tmp_path, monkeypatch, capsys):
    import search

    monkeypatch.chdir(tmp_path)
    code = search.main(["--space", "quick", "--trials", "4", "--jobs", "1", "--cv", "1", "--quiet",
                        "--no-plots", "--out", str(tmp_path), "--sampler", "random",
                        "--metric", "val_accuracy:max,n_params:min", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert "Pareto front of val_accuracy (validation split) against n_params:" in out
    table = out.split("n_params: ")[1].splitlines()
    assert table[1].split() == ["trial", "val_accuracy", "n_params", "test_accuracy"]
    saved = json.loads((tmp_path / "quick" / "summary.json").read_text())
    assert [line.split()[0] for line in table[2:2 + saved["n_pareto"]]] == [
        f"#{m['trial']}" for m in saved["pareto"]]
    assert "[one network: n_params; each evaluated once on test, n=" in out
