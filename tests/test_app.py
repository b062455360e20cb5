"""run.py as users run it: single runs, multiruns, the results table and plots, bad input.

Subprocess runs work in pytest's tmp folders (cwd and hydra.*.dir), never in the repository's
outputs/. The multirun is shared by several tests through a module fixture.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conf.schema import compose_experiment
from core.config import ConfigError, OptimizerConfig, SchedulerConfig
from core.schedules import ReduceLROnPlateau, lr_at
from sweeper.multirun import labels, write_results

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["metrics.csv", "summary.json", "model.npz", "curves.png"]
PLOTS = ["val_curves.png", "test_metric.png", "lr.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["data=moons", "data.n_samples=200", "engine=numpy"]


def run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


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


# ---------------------------------------------------------------- every run its own folder


def taken_seconds(root: Path, seconds: int = 90) -> list[Path]:
    """Occupy outputs/<root>/<date>/<time> for the next ``seconds`` seconds as another run
    would (a file inside), so runs started now collide with it whatever second they start."""
    start = datetime.datetime.now()
    taken = []
    for k in range(seconds):
        t = start + datetime.timedelta(seconds=k)
        folder = root / t.strftime("%Y-%m-%d") / t.strftime("%H-%M-%S")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "other.txt").write_text("another run's file")
        taken.append(folder)
    return taken


def start_app(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]


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
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "optimizer=nope"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def test_cfg_job_help_and_tab_completion(tmp_path: Path) -> None:
    shown = run_app("--cfg", "job", "optimizer=cyclic", cwd=tmp_path)
    assert shown.returncode == 0
    cfg = yaml.safe_load(shown.stdout)
    assert (cfg["optimizer"]["name"], cfg["scheduler"]["name"]) == ("momentum", "cyclic")
    helped = run_app("--help", cwd=tmp_path)
    assert "optimizer: adam, adamw, cosine, cyclic, momentum" in helped.stdout
    env = {**os.environ, "COMP_LINE": "python run.py scheduler=co"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-sc", "query=bash"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.stdout.split() == ["scheduler=constant", "scheduler=cosine"]
    assert not any(tmp_path.iterdir())  # none of these wrote a run folder


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
