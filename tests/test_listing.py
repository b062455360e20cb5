"""sweeper.listing through search.py --list."""

from __future__ import annotations

import subprocess
import sys

from sweeper.study import run_study
from tests.studies import ROOT, settings


def test_list_shows_every_study(tmp_path):
    run_study(settings(tmp_path, 2, sampler="random", pruner="none", name="one"), progress=False)
    run_study(settings(tmp_path, 3, sampler="random", pruner="none", name="two"), progress=False)
    out = subprocess.run([sys.executable, str(ROOT / "search.py"), "--list", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split()[:4] == ["study", "metric", "best", "complete"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == {"one", "two"}
    assert sum(int(x) for x in rows["two"][3:7]) == 3
