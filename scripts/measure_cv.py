"""Measure two design choices of K-fold cross-validated trials (issue 12).

1. ``final``: which final model a cross-validated configuration should become, on test:
   (a) the K fold models as an ensemble (probabilities averaged), or
   (b) one model refit on all of train+val for the mean curve's best epoch count;
   next to the untuned status quo (``single``: core.experiment.run, trained on train, early
   stopping on val) and the fold models' own mean test accuracy (``member``).
2. ``ranking``: which validation score ranks configurations most like their test accuracy:
   the CV mean val_accuracy, the CV mean val_loss, val_accuracy with val_loss breaking ties,
   and, for reference, today's single-split val_accuracy.

Every cell is one data.seed (a different train/val/test split) of one configuration:

    python scripts/measure_cv.py                    # both parts, K=5, data seeds 0 1 2
    python scripts/measure_cv.py final --seeds 0    # one part, fewer seeds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python scripts/measure_cv.py` from a checkout

import numpy as np
import pandas as pd

BASE = ["engine=cpu", "engine.threads=1", "view=quiet"]

# part 1: a handful of configurations of different quality
FINAL_CONFIGS = {
    "default": [],
    "256-l2-b32": ["layers.hidden=[256]", "optimizer=adam", "optimizer.lr=1e-3",
                   "regularization=l2", "regularization.l2=1e-4", "trainer.batch_size=32"],
    "sgd-slow-32": ["optimizer=sgd", "optimizer.lr=0.01", "layers.hidden=[32]"],
    "adam-hot-deep": ["layers=deep", "optimizer.lr=0.02"],
    "wide-dropout": ["layers=wide", "regularization=dropout", "regularization.dropout=0.3"],
}
FINAL_DATA = {
    "digits": ["data=digits"],
    "spirals": ["data=spirals"],
    "moons": ["data=moons", "data.noise=0.3"],
}

# part 2: twelve configurations from the default search space, good to poor
SEARCH = ["data=digits", "trainer.epochs=40", "trainer.early_stopping.patience=8"]
RANKING_CONFIGS = {
    "default": [],
    "256-l2-b32": FINAL_CONFIGS["256-l2-b32"],
    "sgd-0.01-32": ["optimizer=sgd", "optimizer.lr=0.01", "layers.hidden=[32]"],
    "mom-0.1-128-64": ["optimizer=momentum", "optimizer.lr=0.1", "layers.hidden=[128,64]"],
    "adam-0.02-deep": ["layers=deep", "optimizer.lr=0.02"],
    "rms-3e-3-drop": ["optimizer=rmsprop", "optimizer.lr=3e-3", "layers.hidden=[64]",
                      "regularization.dropout=0.3"],
    "adamw-cosine-128": ["optimizer=adamw", "scheduler=cosine", "layers.hidden=[128]"],
    "nest-plateau-tanh": ["optimizer=nesterov", "optimizer.lr=0.03", "scheduler=plateau",
                          "layers.activation=tanh", "layers.hidden=[64,64]"],
    "adam-sigmoid-b16": ["optimizer.lr=3e-4", "layers.activation=sigmoid",
                         "layers.hidden=[32]", "trainer.batch_size=16"],
    "sgd-random-16": ["optimizer=sgd", "optimizer.lr=3e-3", "layers.init=random",
                      "layers.hidden=[16]"],
    "mom-0.3-leaky-b128": ["optimizer=momentum", "optimizer.lr=0.3",
                           "layers.activation=leaky_relu", "layers.hidden=[256,128]",
                           "trainer.batch_size=128"],
    "adam-tanh-drop-l2": ["optimizer.lr=1e-2", "layers.activation=tanh", "layers.init=xavier",
                          "layers.hidden=[64]", "regularization.dropout=0.5",
                          "regularization.l2=1e-3"],
}


def compose(overrides: list[str], seed: int):
    from app.compose import compose_experiment

    return compose_experiment([*BASE, *overrides, f"data.seed={seed}"])[1]


def measure(cfg, k: int, *, refit: bool = True) -> dict[str, float]:
    """One cell: the status quo run, the K-fold run, its ensemble and (optionally) its refit."""
    from core.crossval import run_cv
    from core.data import raw_test_split
    from core.experiment import run
    from core.final_model import fold_ensemble, refit_from_summary
    from core.predict import evaluate_scores

    single = run(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cv = run_cv(cfg, k, out_dir=tmp, evaluate_test=True)
        predictor = fold_ensemble(tmp)
        X_raw, y = raw_test_split(cfg.data, cfg.trainer.dtype)
        members = [evaluate_scores(predictor, S, y)[1] for S in predictor.member_scores_raw(X_raw)]
    row = {
        "split_val_acc": single["val_accuracy"],
        "split_val_loss": single["val_loss"],
        "single": single["test_accuracy"],
        "cv_val_acc": cv["val_accuracy"],
        "cv_val_loss": cv["val_loss"],
        "ensemble": cv["test_accuracy"],
        "member": float(np.mean(members)),
        "cv_best_epoch": cv["best_epoch"],
    }
    if refit:
        row["refit"] = refit_from_summary(cfg, cv)["test_accuracy"]
    return row


def collect(configs: dict, data: dict, seeds: list[int], k: int, fixed: list[str]) -> pd.DataFrame:
    rows = []
    for data_name, data_overrides in data.items():
        for name, overrides in configs.items():
            for seed in seeds:
                cfg = compose([*fixed, *data_overrides, *overrides], seed)
                rows.append({"data": data_name, "config": name, "seed": seed,
                             **measure(cfg, k)})
    return pd.DataFrame(rows)


def final_table(df: pd.DataFrame) -> str:
    cols = ["single", "member", "ensemble", "refit"]
    table = df.groupby(["data", "config"], sort=False)[cols].mean()
    table["ens-refit"] = table["ensemble"] - table["refit"]
    d = df["ensemble"] - df["refit"]
    se = d.std(ddof=1) / np.sqrt(len(d))
    by_data = df.assign(d=d).groupby("data", sort=False)["d"].agg(["mean", "count"])
    lines = [
        ("test accuracy, mean over data seeds (a = ensemble of the K fold models, "
        "b = refit on train+val)"),
        table.to_string(float_format=lambda v: f"{v:.4f}"),
        "",
        (f"ensemble - refit over {len(d)} cells: mean {d.mean():+.4f} (s.e. {se:.4f}); "
        f"ensemble better in {int((d > 0).sum())}, equal in {int((d == 0).sum())}, "
        f"worse in {int((d < 0).sum())}"),
        "per data set: " + ", ".join(f"{i} {r['mean']:+.4f}" for i, r in by_data.iterrows()),
        (f"mean over all cells: single {df['single'].mean():.4f}, member "
        f"{df['member'].mean():.4f}, ensemble {df['ensemble'].mean():.4f}, "
        f"refit {df['refit'].mean():.4f}"),
    ]
    return "\n".join(lines)


RULES = {  # name -> the columns to sort by (descending after sign), best first
    "cv val_accuracy": [("cv_val_acc", 1)],
    "cv val_loss": [("cv_val_loss", -1)],
    "cv val_acc, loss tie-break": [("cv_val_acc", 1), ("cv_val_loss", -1)],
    "split val_accuracy (today)": [("split_val_acc", 1)],
    "split val_acc, loss tie-break": [("split_val_acc", 1), ("split_val_loss", -1)],
}


def rank_scores(group: pd.DataFrame, keys: list[tuple[str, int]]) -> pd.Series:
    """A rank per configuration under a rule (1 = best, keys compared in order; ties share
    their mean rank)."""
    rows = [tuple(v) for v in np.column_stack([group[c].to_numpy() * s for c, s in keys])]
    better = np.array([[b > a for b in rows] for a in rows])  # [i, j]: j beats i
    equal = np.array([[b == a for b in rows] for a in rows])
    return pd.Series(1 + better.sum(axis=1) + (equal.sum(axis=1) - 1) / 2, index=group.index)


def ranking_table(df: pd.DataFrame, truth: str) -> str:
    quality = df.groupby("config")[truth].mean()  # less noisy: averaged over the splits
    rows = []
    for rule, keys in RULES.items():
        rho_seed, rho_quality, top1, regret = [], [], [], []
        for _, group in df.groupby("seed"):
            ranks = rank_scores(group, keys)
            test = group[truth]
            rho_seed.append(ranks.corr(test.rank(ascending=False), method="spearman"))
            q = group["config"].map(quality)
            rho_quality.append(ranks.corr(q.rank(ascending=False), method="spearman"))
            picked = ranks == ranks.min()  # ties: the expected value of a random pick among them
            top1.append(test[picked].mean())
            regret.append(test.max() - test[picked].mean())
        rows.append({"rule": rule, "spearman vs test": np.mean(rho_seed),
                     "spearman vs mean test": np.mean(rho_quality),
                     "top-1 test acc": np.mean(top1), "regret": np.mean(regret)})
    lines = [
        (f"ranking {df['config'].nunique()} configurations on digits; truth = test accuracy of "
        f"the {truth} model; mean over {df['seed'].nunique()} data seeds"),
        pd.DataFrame(rows).set_index("rule").to_string(float_format=lambda v: f"{v:.4f}"),
        (f"(oracle top-1 {df.groupby('seed')[truth].max().mean():.4f}, "
        f"mean config {df[truth].mean():.4f})"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("final", "ranking", "all"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds")
    parser.add_argument("--k", type=int, default=5, help="folds")
    parser.add_argument("--csv", type=Path, help="also write the raw cells to this folder")
    args = parser.parse_args(argv)
    if args.part in ("final", "all"):
        t0 = time.perf_counter()
        df = collect(FINAL_CONFIGS, FINAL_DATA, args.seeds, args.k, [])
        print(final_table(df))
        print(f"[final: {len(df)} cells, {time.perf_counter() - t0:.0f} s]\n")
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.csv / "final.csv", index=False)
    if args.part in ("ranking", "all"):
        t0 = time.perf_counter()
        df = collect(RANKING_CONFIGS, {"digits": []}, args.seeds, args.k, SEARCH)
        for truth in ("ensemble", "refit"):
            print(ranking_table(df, truth) + "\n")
        print(df.groupby("config", sort=False)[
            ["split_val_acc", "cv_val_acc", "cv_val_loss", "ensemble", "refit"]
        ].mean().to_string(float_format=lambda v: f"{v:.4f}"))
        print(f"[ranking: {len(df)} cells, {time.perf_counter() - t0:.0f} s]")
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.csv / "ranking.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
