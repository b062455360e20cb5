"""Training speed of nnsweep against PyTorch, scikit-learn and a plain NumPy loop.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/benchmark.py [--quick]
    ... --before main   # the CPU engine of main too, in the same run

Three workloads (issues #6, #17), identical synthetic float32 data, Adam, ReLU, softmax CE:
  wide    784-256-128-10, batch 128, one epoch of 60,000 samples (the machine's BLAS threads)
  tiny    2-16-16-2 on moons (2,000 samples), batch 32, 200 epochs
  digits  64-256-10, batch 64, 40 epochs of 1,222 samples: the median trial of the default
          search space (one fold of digits), run with one thread as a search worker runs it;
          digits-dropout the same with dropout 0.25 (the space's median), digits-tanh with tanh
          (a third of the space's activations), both nnsweep's engines only
"products only" runs the steps' matrix products and nothing else (no gather, loss,
activation or update), through the same BLAS from a compiled loop: the time no engine built
on this BLAS can beat, the reference the wide target's percentage is judged against.
``--before REV`` adds the contestant "nnsweep cpu @REV": the CPU engine of another git
revision (exported with ``git archive``), measured in the same run.
Every contestant runs in its own process, ``--repeats`` times in each of ``--passes`` passes
over all contestants; the table shows the best run (the median is in the CSV), its
µs per optimizer step, samples/s, GFLOP/s in real FLOPs of the matrix products
(Workload.flops), its time relative to nnsweep's cpu engine, the percentage of the float32
GEMM peak measured in the same run, and how much of the CPUs other jobs used during that best
run (this box is shared; before each contestant
the script waits up to ``--wait-idle`` seconds for idle CPUs).
numba's compile time (first call with an empty cache vs a cache load) is measured in fresh
processes and reported separately. Results: outputs/benchmarks/benchmark.csv, targets.csv and
benchmark.png. PyTorch (``pip install torch==2.13.0``) is optional: without it its rows say so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python scripts/benchmark.py` from a checkout

import bench_baselines as B  # this script's folder is on sys.path
import numpy as np


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]
    n: int
    batch: int
    epochs: int
    lr: float = 1e-3
    dropout: float = 0.0  # on every hidden layer; only nnsweep's engines run such a workload
    activation: str = "relu"  # of the hidden layers; other than relu: nnsweep's engines only

    @property
    def n_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def flops(self) -> int:
        """Real floating-point operations of training (matrix products only): per layer of
        a x b and per sample, 2ab forward, 2ab for the weight gradient and 2ab for the input
        gradient, which the first layer does not need. (6 x params x samples overcounts the
        wide net by ~40 %: its first layer holds most of the weights.)"""
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        per_sample = sum((4 if i == 0 else 6) * a * b for i, (a, b) in enumerate(pairs))
        return per_sample * self.n * self.epochs

    def label(self) -> str:
        arch = "-".join(map(str, self.sizes))
        extra = f" dropout {self.dropout:g}" if self.dropout else ""
        extra += f" {self.activation}" if self.activation != "relu" else ""
        return f"{self.name} {arch} b{self.batch} n{self.n} x{self.epochs}ep{extra}"


    @property
    def steps(self) -> int:
        return -(-self.n // self.batch) * self.epochs


def workloads(quick: bool) -> list[Workload]:
    return [
        Workload("wide", (784, 256, 128, 10), 6_000 if quick else 60_000, 128, 1),
        Workload("tiny", (2, 16, 16, 2), 2_000, 32, 20 if quick else 200),
        Workload("digits", (64, 256, 10), 1_222, 64, 4 if quick else 40),
        # the default space samples dropout from [0, 0.5]: its median trial drops a quarter
        Workload("digits-dropout", (64, 256, 10), 1_222, 64, 4 if quick else 40, dropout=0.25),
        Workload("digits-tanh", (64, 256, 10), 1_222, 64, 4 if quick else 40, activation="tanh"),
    ]


# a search worker holds digits-sized nets at one BLAS thread (core/experiment.py
# blas_threads); every contestant of that workload gets one thread
SINGLE_THREADED = {"digits", "digits-dropout", "digits-tanh"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def make_data(wl: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, n_in) float32 standardised, y (n,) int64, Y (n, n_out) float32 one-hot."""
    rng = np.random.default_rng(seed)
    if wl.name == "tiny":
        from sklearn.datasets import make_moons

        X, y = make_moons(wl.n, noise=0.2, random_state=seed)
        X = (X - X.mean(0)) / X.std(0)
    else:  # MNIST/digits-shaped: labels from a random linear teacher, so the task is learnable
        X = rng.normal(size=(wl.n, wl.sizes[0]))
        y = np.argmax(X @ rng.normal(size=(wl.sizes[0], wl.sizes[-1])), axis=1)
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = y.astype(np.int64)
    return X, y, np.eye(wl.sizes[-1], dtype=np.float32)[y]


def gemm_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 np.dot throughput of two size x size matrices, GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    np.dot(a, b, out=out)
    best = min(_timed(lambda: np.dot(a, b, out=out)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _cpu_jiffies() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return values[3] + values[4], sum(values)


def wait_for_idle_cpu(max_seconds: float, *, need: float = 0.9, window: float = 2.0) -> float:
    """Wait until the CPUs were >= ``need`` idle over ``window`` seconds (other people's jobs
    share this box), at most ``max_seconds``; return the last idle fraction (NaN off Linux)."""
    if not Path("/proc/stat").exists():
        return float("nan")
    deadline = time.monotonic() + max_seconds
    while True:
        idle0, total0 = _cpu_jiffies()
        time.sleep(window)
        idle1, total1 = _cpu_jiffies()
        idle = (idle1 - idle0) / max(total1 - total0, 1)
        if idle >= need or time.monotonic() >= deadline:
            return idle


def others_share(fn) -> tuple[float, float]:
    """Run fn() -> seconds; return (seconds, share of the machine's CPU time that other
    processes used meanwhile, 0..1). A run other jobs ate into is visible in the table."""
    if not Path("/proc/stat").exists():
        return fn(), float("nan")
    idle0, total0 = _cpu_jiffies()
    own0 = sum(os.times()[:2])
    seconds = fn()
    idle1, total1 = _cpu_jiffies()
    own = (sum(os.times()[:2]) - own0) * os.sysconf("SC_CLK_TCK")  # our jiffies
    total = max(total1 - total0, 1)
    return seconds, max(0.0, (total - (idle1 - idle0) - own) / total)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_COMPILE_PROBE = """
import sys, time
sys.path.insert(0, {root!r})
import numpy as np
from core import network as N
from core.config import OptimizerConfig, RegularizationConfig
from core.engines.cpu import CpuEngine
spec = N.NetworkSpec(2, (N.LayerSpec(4, "relu"), N.LayerSpec(2, "softmax")), "cross_entropy")
params = N.init_params(spec, dtype="float32")
e = CpuEngine(spec, params, OptimizerConfig(), RegularizationConfig())
e.set_train_data(np.zeros((8, 2), np.float32), np.eye(2, dtype=np.float32)[[0, 1] * 4])
t = time.perf_counter()
e.train_epoch(np.arange(8), np.full(1, 1e-3), 8)
print(time.perf_counter() - t)
"""


def compile_seconds() -> tuple[float, float]:
    """(first call with an empty numba cache, first call loading that cache), in fresh
    processes with their own NUMBA_CACHE_DIR so the repository's cache is left alone."""
    code = _COMPILE_PROBE.format(root=str(ROOT))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = [
            float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()[-1])
            for _ in range(2)
        ]  # fmt: skip
    return runs[0], runs[1]


def blas_report() -> list[str]:
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS numba's np.dot calls)
    from threadpoolctl import threadpool_info

    lines = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            lines.append(
                f"{info['internal_api']} {info['version']} kernel={info.get('architecture')} "
                f"threads={info['num_threads']} ({Path(info['filepath']).name})"
            )
    return lines


CONTESTANTS = ("nnsweep cpu", "nnsweep numpy", "nnsweep cuda", "pytorch",
               "sklearn MLPClassifier", "numpy loop", "products only")


def trainer_of(name: str) -> tuple[B.Trainer | None, str]:
    """(trainer, note) of a contestant; trainer None when it cannot run here."""
    if name.startswith("nnsweep cpu @"):  # sys.path starts with that revision's tree
        return B.train_nnsweep("cpu"), "the CPU engine of that revision"
    if name.startswith("nnsweep"):
        engine = name.split()[1]
        if engine == "cuda":
            from core.engines import cuda_available

            if not cuda_available():
                return None, "not measured (no GPU on this machine)"
        return B.train_nnsweep(engine), ""
    if name == "pytorch":
        torch = B.torch_version()
        if torch is None:
            return None, "not installed: pip install torch==2.13.0"
        return B.train_torch, f"torch {torch}"
    if name == "sklearn MLPClassifier":
        return B.train_sklearn, "2-class data: 1 logistic output unit (tiny)"
    if name == "products only":
        return B.train_products_only, "the steps' matrix products alone through the same BLAS"
    return B.train_numpy_loop, "hand-written, per-minibatch Python loop"


def export_revision(rev: str) -> Path:
    """A copy of the tree of git revision ``rev`` in a temporary folder (no worktree, no
    change to the repository); its numba cache starts empty and fills on first use."""
    out = Path(tempfile.mkdtemp(prefix="nnsweep-bench-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def worker(workload: str, name: str, quick: bool, repeats: int) -> dict:
    """Time one contestant on one workload (runs in its own process: see run())."""
    wl = next(w for w in workloads(quick) if w.name == workload)
    trainer, note = trainer_of(name)
    variant = wl.dropout or wl.activation != "relu"
    if variant and not name.startswith("nnsweep"):
        return {"note": "not run: dropout and tanh workloads compare nnsweep's engines only"}
    if trainer is None:
        return {"note": note}
    if variant:
        trainer = functools.partial(trainer, dropout=wl.dropout, activation=wl.activation)
    X, y, Y = make_data(wl)
    warm = wl.batch * 2  # warm-up: compile or cache load, imports, thread pools
    trainer(X[:warm], y[:warm], Y[:warm], wl.sizes, wl.batch, 1, wl.lr, 0)
    runs = [others_share(lambda: trainer(X, y, Y, wl.sizes, wl.batch, wl.epochs, wl.lr, 0))
            for _ in range(repeats)]  # fmt: skip
    return {"note": note, "times": [t for t, _ in runs], "others": [o for _, o in runs]}


def chosen(args: argparse.Namespace) -> list[Workload]:
    return [wl for wl in workloads(args.quick) if not args.workloads or wl.name in args.workloads]


def run(args: argparse.Namespace) -> tuple[list[dict], list[dict], dict]:
    """Every (workload, contestant) runs in a fresh process: PyTorch's OpenMP threads and
    OpenBLAS's pthreads both spin after each call, and sharing one process on two cores
    slows whichever runs second by several times."""
    import sklearn

    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    wait_for_idle_cpu(args.wait_idle)
    peak = gemm_peak()
    info = {"gemm_peak_gflops": peak, "blas": blas_report(), "sklearn": sklearn.__version__}
    print(f"float32 GEMM peak (np.dot 2048^2, best of 10): {peak:.1f} GFLOP/s")
    for line in info["blas"]:
        print(f"BLAS: {line}")
    contestants = list(CONTESTANTS)
    roots = {}
    if args.before:
        name = f"nnsweep cpu @{args.before}"
        contestants.insert(1, name)
        roots[name] = export_revision(args.before)
    wait_for_idle_cpu(args.wait_idle)
    first, cached = compile_seconds()
    info["compile_first_s"], info["compile_cached_s"] = first, cached
    print(f"numba compile of the fused epoch (float32): first call {first:.2f} s, "
          f"cached {cached:.2f} s (not included in any time below)")  # fmt: skip
    rows = []
    results: dict[tuple[str, str], dict] = {}
    for n_pass in range(args.passes):  # separate time windows: one noisy moment hits one pass
        for wl in chosen(args):
            for name in contestants:
                cmd = [sys.executable, __file__, "--worker", wl.name, name, "--repeats",
                       str(args.repeats)] + (["--quick"] if args.quick else [])  # fmt: skip
                if name in roots:
                    cmd += ["--root", str(roots[name])]
                env = dict(os.environ, **(ONE_THREAD if wl.name in SINGLE_THREADED else {}))
                idle = wait_for_idle_cpu(args.wait_idle)
                done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                merged = results.setdefault((wl.name, name), {"note": result["note"], "idle": []})
                merged["idle"].append(idle)
                for key in ("times", "others"):
                    merged.setdefault(key, []).extend(result.get(key, []))
                if "times" in result:
                    print(f"  pass {n_pass + 1} {wl.name:5s} {name:22s} best "
                          f"{min(result['times']):8.4f} s  median "
                          f"{statistics.median(result['times']):8.4f} s")  # fmt: skip
                elif n_pass == 0:
                    print(f"  {wl.name:5s} {name:22s} {result['note']}")
    for wl in chosen(args):
        flops = wl.flops
        for name in contestants:
            result = results[(wl.name, name)]
            row = {"workload": wl.label(), "implementation": name, "note": result["note"],
                   "cpu_idle_before": min(result["idle"])}  # fmt: skip
            rows.append(row)
            if not result.get("times"):
                continue
            best = min(result["times"])
            row["others_cpu_pct"] = round(100 * result["others"][result["times"].index(best)], 1)
            row.update(seconds=best, median_s=statistics.median(result["times"]),
                       samples_per_s=wl.n * wl.epochs / best, gflops=flops / best / 1e9,
                       us_per_step=best / wl.steps * 1e6)  # fmt: skip
    wait_for_idle_cpu(args.wait_idle)
    after = gemm_peak()  # again at the end: the best of both is the peak of this run
    print(f"float32 GEMM peak again after the runs: {after:.1f} GFLOP/s")
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    peak = info["gemm_peak_gflops"] = max(peak, after)
    for row in rows:  # time relative to nnsweep cpu on the same workload (> 1: slower)
        ref = next(r for r in rows if r["workload"] == row["workload"]
                   and r["implementation"] == "nnsweep cpu")  # fmt: skip
        if "seconds" in row:
            row["time_vs_nnsweep_cpu"] = row["seconds"] / ref["seconds"]
            row["pct_gemm_peak"] = 100 * row["gflops"] / peak
    return rows, targets(rows, peak), info


def targets(rows: list[dict], peak: float) -> list[dict]:
    """The targets of issue #17, each with the measured value and whether it was met."""

    def get(wl: str, impl: str) -> dict:
        match = (r for r in rows if r["workload"].startswith(wl) and r["implementation"] == impl)
        return next(match, {})

    out = []
    for wl, impl, need in [("wide", "pytorch", 3.0), ("tiny", "pytorch", 100.0),
                           ("tiny", "numpy loop", 20.0)]:  # fmt: skip
        other = get(wl, impl).get("seconds")
        got = other / get(wl, "nnsweep cpu")["seconds"] if other else float("nan")
        out.append({"target": f"{wl}: nnsweep cpu >= {need:g}x {impl} samples/s",
                    "measured": got, "met": bool(got >= need) if other else None})  # fmt: skip
    pct = get("wide", "nnsweep cpu").get("gflops", float("nan")) / peak * 100
    out.append({"target": "wide: nnsweep cpu >= 75% of the GEMM peak (real FLOPs)",
                "measured": pct, "met": None if np.isnan(pct) else bool(pct >= 75)})  # fmt: skip
    us = get("tiny", "nnsweep cpu").get("us_per_step", float("nan"))
    out.append({"target": "tiny: nnsweep cpu <= 4 us per step", "measured": us,
                "met": None if np.isnan(us) else bool(us <= 4)})  # fmt: skip
    # not a target: what the 75 % target is measured against, the same products with
    # nothing else (no engine on this BLAS can be faster)
    ceiling = get("wide", "products only").get("gflops", float("nan")) / peak * 100
    out.append({"target": "wide: the matrix products alone, % of the GEMM peak (reference)",
                "measured": ceiling, "met": None})  # fmt: skip
    return out


def report(rows: list[dict], goals: list[dict], info: dict, out_dir: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = ["workload", "implementation", "seconds", "median_s", "us_per_step",
            "samples_per_s", "gflops",
            "time_vs_nnsweep_cpu", "pct_gemm_peak", "others_cpu_pct", "note",
            "cpu_idle_before"]  # fmt: skip
    df = df.reindex(columns=cols)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "benchmark.csv", index=False)
    pd.DataFrame(goals).to_csv(out_dir / "targets.csv", index=False)
    show = df.drop(columns=["median_s", "cpu_idle_before"]).copy()
    show["note"] = show["note"].fillna("")
    print()
    print(show.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:,.3g}"))
    print()
    for g in goals:
        if g["met"] is None:
            verdict = "n/a (not measured)" if np.isnan(g["measured"]) else "reference"
        else:
            verdict = "met" if g["met"] else "NOT met"
        print(f"target {g['target']}: measured {g['measured']:.3g} -> {verdict}")
    plot(df, info, out_dir / "benchmark.png")
    names = ", ".join(str(out_dir / f) for f in ("benchmark.csv", "targets.csv", "benchmark.png"))
    print(f"\nwrote {names}")


def plot(df, info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    measured = df.dropna(subset=["seconds"])
    grid = sns.catplot(data=measured, kind="bar", x="samples_per_s", y="implementation",
                       col="workload", col_wrap=3, sharex=False, height=3.2, aspect=1.6,
                       color="tab:blue")  # fmt: skip
    for ax, (_, part) in zip(grid.axes.flat, measured.groupby("workload", sort=False)):
        ax.set_xscale("log")  # bars start at a decade at least 3x below the slowest one
        speeds = part["samples_per_s"]
        ax.set_xlim(10 ** np.floor(np.log10(speeds.min() / 3)), speeds.max() * 6)
        ax.set_xlabel("training samples / s (log scale)")
        for container in ax.containers:
            ax.bar_label(container, fmt="{:,.0f}", fontsize=7, padding=2)
    grid.set_titles("{col_name}", size=9)
    grid.figure.suptitle(f"Training throughput, float32, Adam (higher is better); "
                         f"GEMM peak {info['gemm_peak_gflops']:.0f} GFLOP/s", y=1.03)  # fmt: skip
    missing = df[df["seconds"].isna()]
    if len(missing):  # one entry per reason: "pytorch, sklearn (digits-dropout): not run: ..."
        text = "; ".join(
            f"{', '.join(dict.fromkeys(part.implementation))} "
            f"({', '.join(dict.fromkeys(w.split()[0] for w in part.workload))}): {note}"
            for note, part in missing.groupby("note", sort=False))
        grid.figure.text(0.01, -0.04, f"Not shown: {text}", fontsize=8)
    grid.savefig(path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 samples wide, 20 epochs tiny")
    parser.add_argument("--workloads", nargs="+", metavar="NAME",
                        choices=[wl.name for wl in workloads(False)],
                        help="run only these workloads (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per contestant and pass")
    parser.add_argument("--passes", type=int, default=2,
                        help="passes over all contestants; the best of all runs counts")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--wait-idle", type=float, default=120.0, metavar="SECONDS",
                        help="before each measurement wait up to this long for idle CPUs "
                        "(the box is shared); 0: do not wait")  # fmt: skip
    parser.add_argument("--before", metavar="REV", default=None,
                        help="also time the CPU engine of this git revision (e.g. main)")
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "CONTESTANT"),
                        help=argparse.SUPPRESS)  # internal: time one contestant, print JSON
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)  # internal: its tree
    args = parser.parse_args(argv)
    if args.root:  # a worker timing another revision: its core/ comes first
        sys.path.insert(0, str(args.root))
    if args.worker:
        print(json.dumps(worker(*args.worker, args.quick, args.repeats)))
        return 0
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var}={os.environ[var]} is set; the issue's numbers are taken with "
                  f"`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`")  # fmt: skip
    rows, goals, info = run(args)
    report(rows, goals, info, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
