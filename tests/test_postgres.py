"""Scale-out on a real PostgreSQL server on loopback: three `search.py` workers share one
study, one is killed with SIGKILL mid-trial, and the study still ends with the exact total.

The fixture starts a private server (initdb in a temp folder, a free port on 127.0.0.1) from
the PostgreSQL binaries on this machine; `.ci/run` installs them with apt-get when missing.
In CI a missing server fails the test loudly; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL test cannot run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("NNSWEEP_TEST_POSTGRES")
    if url:  # a server someone else runs
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1 uses psycopg 3 for postgresql://)
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install -e '.[test]')")
    bindir = Path(bins[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="nnsweep-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "start",
            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=50")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nnsweep")
    except subprocess.CalledProcessError as e:
        _unavailable(f"could not start PostgreSQL: {e.stderr.strip()[:300]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/nnsweep"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _worker(url: str, out: Path, study: str, trials: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "search.py"), "--storage", url, "--study", study, "--trials", str(trials),
           "--space", "quick", "--pruner", "none", "--out", str(out), "--quiet", "--no-plots",
           "--jobs", "1", "--cv", "1",  # one worker process each, hold-out trials
           "data=digits", "trainer.early_stopping.enabled=false", "engine=numpy", "engine.threads=1", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_workers_one_killed_exact_total(postgres_url, tmp_path):
    import optuna
    import sqlalchemy.exc

    from sweeper.claim import counts

    target = 9
    # all workers start at the same moment on a fresh database (the study and its tables
    # are created under a race)
    slow = ("trainer.epochs=40", "layers.hidden=[128,128]")  # ~1 s a trial: the kill lands mid-trial
    procs = [_worker(postgres_url, tmp_path, "pg", target, *slow) for _ in range(3)]
    victim = procs[0]
    deadline = time.time() + 180
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name="pg", storage=postgres_url)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):
            # not created yet, or this poll raced the workers creating the tables (a storage
            # object creates missing tables; the workers retry, see sweeper.settings)
            continue
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
    assert running, "the victim never started a trial"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    for p in procs[1:]:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] + c["FAIL"] == target, c
    assert c["RUNNING"] == 0 and c["WAITING"] == 0
    assert c["STALE"] == 1
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    killed = running[0]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    # a late worker joining a finished study runs nothing and overshoots nothing
    late = _worker(postgres_url, tmp_path, "pg", target, *slow)
    late.communicate(timeout=300)
    assert len(optuna.load_study(study_name="pg", storage=postgres_url).trials) == len(numbers)
    # the report reads from the URL
    rep = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--study", "pg", "--storage",
                          postgres_url, "--out", str(tmp_path), "--no-plots"], capture_output=True, text=True, cwd=ROOT)
    assert rep.returncode == 0, rep.stderr
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "pg" / "trials.csv")) == len(numbers)
