"""run.py as users run it, in a subprocess: helpers shared by test_run and test_multirun.

Subprocess runs work in pytest's tmp folders (cwd and hydra.*.dir), never in the repository's
outputs/.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["metrics.csv", "summary.json", "model.npz", "curves.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["data=moons", "data.n_samples=200", "engine=numpy"]


def app_env(**extra: str) -> dict[str, str]:
    """run.py's environment: headless plots, Hydra's short errors, then ``extra``."""
    return {**os.environ, "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "0", **extra}


def run_app(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python run.py *args`` in ``cwd`` to its end; ``env`` adds environment variables."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        check=False,
        cwd=cwd,
        env=app_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


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
    """``python run.py *args`` in ``cwd``, running on (see finish)."""
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
