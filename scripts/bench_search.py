"""Search throughput: what a study costs beyond the training it runs.

    python scripts/bench_search.py                          # 200 and 1,000 trials (--cv 1), 200 with --cv auto
    python scripts/bench_search.py --trials 200 --before 94f10aa   # + the code of another commit
    python scripts/bench_search.py --trials 1000 --sampler random  # without TPE's own cost

Each row is one `python search.py --trials N` on digits with the default space or --space (plots
included, as a user runs it), in a fresh study folder. Columns:
  wall s            the whole command, process start to exit
  trials/s          trials / wall
  finalists         trials trained again with K folds after the search (--cv auto)
  train s           sum of the trials' and finalists' train_seconds (the training loop, all
                    workers)
  overhead ms/trial (wall x workers - train) / trials: everything that is not training
                    (start-up, sampler, storage, composition, files, report and plots)
  median trial ms   median over trials of (trial wall - train_seconds): one trial's own
                    orchestration (sampler, compose, storage, files), start-up excluded
  writes/trial      journal lines / trials (one storage operation per line)
  report s          from the last journal write to the end of the command (tables, best
                    model, plots)

``--before REV`` runs the same command on a git worktree of REV (first --trials value only:
the old code needs ~0.5 s a trial), with the current conf/hparams_search/ copied into it and
its numba cache warmed by an untimed 4-trial search first. Results also go to
outputs/benchmarks/search.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_search(root: Path, trials: int, out: Path, args: argparse.Namespace, cv: str | None) -> dict:
    study = f"bench{trials}"
    cmd = [sys.executable, "search.py", "--trials", str(trials), "--study", study,
           "--out", str(out), "--quiet", "--seed", str(args.seed), "--sampler", args.sampler,
           "--space", args.space]
    if args.jobs:
        cmd += ["--jobs", args.jobs]
    if cv:
        cmd += ["--cv", cv]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return {"wall": wall, "end": time.time(), **measure(out / study, trials, wall)}


def measure(study_dir: Path, trials: int, wall: float) -> dict:
    import pandas as pd

    t = pd.read_csv(study_dir / "trials.csv")
    journal = study_dir / "journal.log"
    workers = t["worker"].nunique()
    # finalists (sweeper.finalists, --cv auto): their K-fold training counts as training
    finals = [json.loads(p.read_text()) for p in study_dir.glob("finalists/trials/*/summary.json")]
    train = float(t["train_seconds"].fillna(0).sum()) + sum(f["train_seconds"] for f in finals)
    lines = sum(1 for _ in open(journal, "rb"))
    return {
        "trials": len(t),
        "finalists": len(finals),
        "workers": workers,
        "trials/s": len(t) / wall,
        "train s": train,
        "overhead ms/trial": (wall * workers - train) / len(t) * 1e3,
        "median trial ms": float((t["seconds"] - t["train_seconds"].fillna(0)).median() * 1e3),
        "writes/trial": lines / len(t),
        "journal_mtime": journal.stat().st_mtime,
        "complete": int((t["state"] == "COMPLETE").sum()),
    }


def worktree(rev: str) -> Path:
    """A checkout of ``rev`` that searches the current spaces (conf/hparams_search/ copied
    into it), so before and now train the same kind of trials and differ in their code."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="nnsweep-before-")) / "repo"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    for space in (ROOT / "conf" / "hparams_search").glob("*.yaml"):
        shutil.copy2(space, path / "conf" / "hparams_search" / space.name)
    # numba caches compiled kernels beside their source: a fresh checkout would compile them
    # (~10 s a worker) inside its first trials; warm its cache first, untimed
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "search.py", "--trials", "4", "--study", "warm", "--out",
                        tmp, "--quiet", "--no-plots", "--jobs", "1", "trainer.epochs=1"],
                       cwd=path, capture_output=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--before", default=None, help="also run this git revision (first --trials only)")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--space", default="default", help="search.py --space (e.g. broad: the space "
                   "issue #11 was measured on)")
    p.add_argument("--jobs", default=None, help="passed to search.py (default: its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cv", nargs="+", default=["1", "auto"],
                   help="--cv values to run the current code with (the first --trials only for "
                        "all but the first; the code before cross-validation has no --cv)")
    p.add_argument("--out", default="outputs/benchmarks")
    args = p.parse_args(argv)

    import pandas as pd

    rows = []
    runs = [("now", ROOT, n, args.cv[0]) for n in args.trials]
    runs += [("now", ROOT, args.trials[0], cv) for cv in args.cv[1:]]
    if args.before:  # with the first --cv where that code has the flag (it came with #12)
        tree = worktree(args.before)
        has_cv = "--cv" in (tree / "search.py").read_text()
        runs.insert(0, (args.before, tree, args.trials[0], args.cv[0] if has_cv else None))
    for label, root, n, cv in runs:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"running {label}: {n} trials, cv {cv} ...", file=sys.stderr, flush=True)
            r = run_search(root, n, Path(tmp), args, cv)
        r["report s"] = r.pop("end") - r.pop("journal_mtime")
        rows.append({"code": label, "space": args.space, "cv": cv or "-", "sampler": args.sampler,
                     **r})
        if root != ROOT:
            subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=ROOT,
                           capture_output=True)
    df = pd.DataFrame(rows)
    if len(args.trials) > 1:
        first = df[df.code == "now"]["wall"].iloc[0]
        df["wall / first"] = df["wall"] / first
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "search.csv", index=False)
    load = os.getloadavg()[0]
    print(df.round(2).to_markdown(index=False) if _has_tabulate() else df.round(2).to_string(index=False))
    print(f"\n{os.cpu_count()} CPUs, load average at the end {load:.2f}; written to {out / 'search.csv'}")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
