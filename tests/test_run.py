"""run.py as users run it: a single run, its folder, bad input and Hydra's own tools.

Subprocess runs work in pytest's tmp folders (cwd and hydra.*.dir), never in the repository's
outputs/ (tests/cli.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from app.compose import compose_experiment
from core.config import ConfigError
from tests.cli import ROOT, RUN_FILES, TINY, finish, is_png, run_app, start_app, taken_seconds

# ---------------------------------------------------------------- single run, in process


def test_default_config_trains_a_good_digits_model(tmp_path: Path) -> None:
    """`python run.py` composes this config; train() is what its main calls."""
    from run import optimized_metric, train

    cfg, _ = compose_experiment(["engine=numpy"])  # the default run on the reference engine
    summary = train(cfg, tmp_path)
    assert summary["dataset"] == "digits" and summary["test_accuracy"] >= 0.95
    for name in RUN_FILES:
        assert (tmp_path / name).is_file(), name
    assert is_png(tmp_path / "curves.png")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["config"]["optimizer"]["name"] == "adam"
    assert optimized_metric(summary) == summary["val_accuracy"]
    assert optimized_metric(summary, "val_loss") == summary["val_loss"]
    assert optimized_metric({"task": "regression", "val_loss": 0.25, "val_accuracy": None}) == 0.25


# ---------------------------------------------------------------- every run its own folder


def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    """Two runs in the same second used to share outputs/runs/<date>/<time>/ (and overwrite
    each other's files); each now claims its own folder and leaves the taken one alone."""
    taken = taken_seconds(tmp_path / "outputs" / "runs")
    seeds = [1, 2]
    finish(
        [
            start_app(*TINY, "trainer=quick", f"trainer.seed={seed}", "view=quiet", cwd=tmp_path)
            for seed in seeds
        ]
    )
    for folder in taken:  # another run's folder is untouched
        assert [p.name for p in folder.iterdir()] == ["other.txt"], folder
    runs = sorted(p.parent for p in (tmp_path / "outputs" / "runs").glob("*/*/summary.json"))
    assert len(runs) == 2
    got = set()
    for run in runs:
        base, _, k = run.name.partition(".")
        assert run.parent / base in taken and k.isdigit(), run  # <time>.1, <time>.2, ...
        for name in RUN_FILES:
            assert (run / name).is_file(), f"{run}/{name}"
        summary = json.loads((run / "summary.json").read_text())
        metrics = pd.read_csv(run / "metrics.csv")
        assert len(metrics) == summary["epochs_run"]
        got.add(summary["config"]["trainer"]["seed"])
    assert got == set(seeds)  # one folder each, not one run's files in both


@pytest.mark.parametrize(
    "args", [["optimizer.lr=-1"], ["-m", "optimizer=adam,nope"], ["-m", "trainer.epoch=1"]]
)
def test_bad_input_leaves_no_folder_behind(tmp_path: Path, args: list[str]) -> None:
    """The folder claimed for a run that bad input stopped held only Hydra's bookkeeping."""
    taken = taken_seconds(tmp_path / "outputs" / ("multiruns" if "-m" in args else "runs"), 30)
    one_error_line(run_app(*args, cwd=tmp_path))
    assert sorted(tmp_path.glob("outputs/*/*/*")) == taken  # the taken ones, nothing new
    for folder in taken:
        assert [p.name for p in folder.iterdir()] == ["other.txt"], folder


def test_hydra_full_error_still_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_app("optimizer=nope", cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "MissingConfigException" in proc.stderr


def test_tools_that_do_not_run_claim_no_folder(tmp_path: Path) -> None:
    for args in (["--cfg", "job"], ["--cfg", "hydra"], ["--help"], ["--info"]):
        assert run_app(*args, cwd=tmp_path).returncode == 0, args
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- bad input and Hydra's tools


def test_out_of_range_value_fails_before_training_with_status_2(tmp_path: Path) -> None:
    proc = run_app("optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: optimizer.lr: -1.0 is out of range; allowed: 0.0 < optimizer.lr"
    )
    assert not (tmp_path / "run" / "metrics.csv").exists()


def options(group: str) -> str:
    """The options of a config group as the files in conf/<group>/ name them."""
    return ", ".join(sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")))


def compose_message(overrides: list[str]) -> str:
    """What search.py (through compose_experiment) says for the same overrides."""
    with pytest.raises(ConfigError) as info:
        compose_experiment(overrides)
    return f"error: {info.value}"


BAD_OVERRIDES = [
    ["optimizer=nope"],
    ["trainer.epoch=5"],
    ["trainer.batch_size=abc"],
    ["data="],
    ["optimizer.lr=interval(0"],
    ["=3"],
    ["trainer.epochs=1,2"],  # a sweep without -m
    ["hydra.foo=1"],
]


EXPECTED_START = {
    "optimizer=nope": f"error: optimizer: unknown option 'nope'; allowed: {options('optimizer')}",
    "trainer.epoch=5": "error: trainer.epoch: Key 'epoch' not in 'TrainerConfig'; allowed: epochs,",
    "trainer.batch_size=abc": "error: trainer.batch_size: Value 'abc' of type 'str' could not be",
    "data=": f"error: data: unknown option ''; allowed: {options('data')}",
    "optimizer.lr=interval(0": "error: optimizer.lr=interval(0: cannot parse",
    "=3": "error: Config group override must be a string",
    "trainer.epochs=1,2": "error: Ambiguous value for argument 'trainer.epochs=1,2'",
    "hydra.foo=1": "error: hydra.foo: Key 'foo' not in 'HydraConf'",
}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("mode", ["run", "multirun", "cfg"])
@pytest.mark.parametrize("override", [o[0] for o in BAD_OVERRIDES], ids=repr)
def test_bad_override_is_one_line_and_status_2(tmp_path: Path, override: str, mode: str) -> None:
    """The same line as search.py, whether Hydra composes for a run, a multirun or --cfg."""
    if mode == "multirun" and override == "trainer.epochs=1,2":
        pytest.skip("a valid sweep under -m")
    flags = {"run": [], "multirun": ["-m"], "cfg": ["--cfg", "job"]}[mode]
    proc = run_app(*flags, override, "hydra.run.dir=run", "hydra.sweep.dir=sweep", cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith(EXPECTED_START[override]), line
    # Hydra shell-escapes its quoting example (key=\'a,b\') for a command line only
    assert line.replace("\\'", "'") == compose_message([override])
    assert not (tmp_path / "run").exists()  # composition failed before a run folder was made
    assert not (tmp_path / "sweep" / "0").exists()  # nor a job folder


def test_bad_job_in_a_sweep_stops_the_multirun_before_any_job(tmp_path: Path) -> None:
    proc = run_app("-m", "optimizer=adam,nope", *TINY, "hydra.sweep.dir=sweep", cwd=tmp_path)
    line = one_error_line(proc)
    assert line == f"error: optimizer: unknown option 'nope'; allowed: {options('optimizer')}"
    assert not (tmp_path / "sweep" / "0").exists()  # the good job did not run either


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.seed=-1", "error: trainer.seed: -1 is out of range; allowed: 0 <= trainer.seed"),
        ("data.seed=-1", "error: data.seed: -1 is out of range; allowed: 0 <= data.seed"),
        ("optimizer.lr=inf", "error: optimizer.lr: inf is not a finite number"),
        ("optimizer.lr=nan", "error: optimizer.lr: nan is not a finite number"),
    ],
)
def test_bad_value_is_one_line_and_status_2(tmp_path: Path, override: str, expected: str) -> None:
    proc = run_app(override, *TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert one_error_line(proc).startswith(expected)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_cfg_job_help_and_tab_completion(tmp_path: Path) -> None:
    shown = run_app("--cfg", "job", "optimizer=cyclic", cwd=tmp_path)
    assert shown.returncode == 0
    cfg = yaml.safe_load(shown.stdout)
    assert (cfg["optimizer"]["name"], cfg["scheduler"]["name"]) == ("momentum", "cyclic")
    helped = run_app("--help", cwd=tmp_path)
    assert "optimizer: adam, adamw, cosine, cyclic, momentum" in helped.stdout
    completed = run_app("-sc", "query=bash", cwd=tmp_path, COMP_LINE="python run.py scheduler=co")
    assert completed.stdout.split() == ["scheduler=constant", "scheduler=cosine"]
    assert not any(tmp_path.iterdir())  # none of these wrote a run folder
