"""K-fold cross-validation: the folds, lockstep training through run_cv, the two final models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core import checkpoint as C
from core.config import ConfigError, DataConfig, EarlyStoppingConfig, SchedulerConfig
from core.crossval import cv_data, fold_indices, fold_seed, run_cv
from core.data import load_raw, raw_test_split, refit_data, split_parts
from core.engines import make_engine
from core.experiment import build, targets
from core.final_model import evaluate_ensemble, fold_ensemble, refit, refit_from_summary
from core.network import predict_logits
from core.predict import load_predictor
from core.trainer import fit
from tests.helpers import tiny_config

# ------------------------------------------------------------------ fold_indices


@pytest.mark.parametrize("sizes", [[1, 2, 50], [5, 5, 5, 5], [97], [30, 31, 29, 7]])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_fold_indices_are_stratified_disjoint_and_complete(sizes, k):
    strata = np.random.default_rng(1).permutation(np.repeat(np.arange(len(sizes)), sizes))
    folds = fold_indices(len(strata), k, np.random.default_rng(0), strata=strata)
    assert len(folds) == k
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(len(strata)))
    for fold in folds:
        counts = np.bincount(strata[fold], minlength=len(sizes))
        assert np.all(np.abs(counts - np.array(sizes) / k) < 1.0), counts
    lengths = [len(f) for f in folds]
    assert max(lengths) - min(lengths) <= 1


def test_fold_indices_without_strata_and_per_seed():
    a = fold_indices(23, 4, np.random.default_rng(5))
    b = fold_indices(23, 4, np.random.default_rng(5))
    c = fold_indices(23, 4, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert sorted(len(f) for f in a) == [5, 6, 6, 6]


# ------------------------------------------------------------------ cv_data


@pytest.mark.parametrize("name,k", [("digits", 5), ("spirals", 3), ("blobs", 7)])
def test_cv_data_folds_cover_train_val_and_never_test(name, k):
    cfg = DataConfig(name=name, n_samples=301, n_classes=4, seed=3)
    raw = load_raw(cfg)
    train, val, test = split_parts(raw, cfg)
    data = cv_data(cfg, k)
    held = data.held_out
    pool = np.sort(np.concatenate([train, val]))
    np.testing.assert_array_equal(np.sort(np.concatenate(held)), pool)  # disjoint, complete
    np.testing.assert_array_equal(data.test_index, test)
    n_c = np.bincount(raw.y[pool], minlength=len(raw.classes))
    for i, (ds, idx) in enumerate(zip(data.folds, held)):
        assert not np.intersect1d(idx, test).size
        counts = np.bincount(raw.y[idx], minlength=len(raw.classes))
        assert np.all(np.abs(counts - n_c / k) <= 1.0), counts  # each class within 1 of its share
        train_idx = np.setdiff1d(pool, idx)
        assert len(ds.train.y) == len(train_idx) and len(ds.val.y) == len(idx)
        assert len(ds.test.y) == 0  # a fold never sees the test split
        # standardized on the fold's training part only, as load_dataset does on train
        mean, std = raw.X[train_idx].mean(axis=0), raw.X[train_idx].std(axis=0)
        std[std == 0] = 1.0
        np.testing.assert_allclose(ds.mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ds.std, std, rtol=1e-12)
        expected = np.sort(((raw.X[idx] - mean) / std).astype(np.float32), axis=0)
        np.testing.assert_allclose(np.sort(ds.val.X, axis=0), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(data.test_X_raw, raw.X[test])


def test_cv_data_is_deterministic_per_seed_and_differs_across_seeds():
    cfg = DataConfig(name="digits", seed=0)
    a, b = cv_data(cfg, 5), cv_data(cfg, 5)
    c = cv_data(replace(cfg, seed=1), 5)
    for x, y in zip(a.held_out, b.held_out):
        np.testing.assert_array_equal(x, y)
    for fa, fb in zip(a.folds, b.folds):
        assert fa.train.X.tobytes() == fb.train.X.tobytes()
    assert not any(np.array_equal(x, y) for x, y in zip(a.held_out, c.held_out))


def test_regression_folds_are_plain(tmp_path):
    X = np.random.default_rng(0).normal(size=(90, 3))
    np.savez(tmp_path / "reg.npz", X=X, y=X @ np.array([1.0, -2.0, 0.5]) + 0.1)
    cfg = DataConfig(name="file", path=str(tmp_path / "reg.npz"))
    data = cv_data(cfg, 4)
    assert data.folds[0].task == "regression"
    assert sorted(len(h) for h in data.held_out) == [19, 19, 19, 20]  # 77 of 90 in train+val
    summary = run_cv(replace(tiny_config(epochs=3), data=cfg), 4, evaluate_test=True)
    assert np.isnan(summary["val_accuracy"]) and np.isfinite(summary["val_loss"])
    assert np.isfinite(summary["test_loss"])


@pytest.mark.parametrize("k", [1, 0, 10_000, 2.5])
def test_bad_k_is_a_config_error(k):
    with pytest.raises(ConfigError, match=r"^cv\.k: "):
        cv_data(DataConfig(name="moons", n_samples=100), k)


# ------------------------------------------------------------------ run_cv


def _independent_folds(cfg, k):
    """Each fold trained alone with the plain single-engine fit: the reference."""
    data = cv_data(cfg.data, k, cfg.trainer.dtype)
    out = []
    for i, ds in enumerate(data.folds):
        cfg_i = replace(cfg, trainer=replace(cfg.trainer, seed=fold_seed(cfg.trainer.seed, i)))
        spec, params = build(cfg_i, ds)
        engine = make_engine(cfg_i, spec, params)
        T = {s: targets(getattr(ds, s).y, spec.loss, spec.n_out, cfg.trainer.dtype)
             for s in ("train", "val")}
        result = fit(engine, cfg_i, ds.train.X, T["train"], ds.val.X, T["val"])
        out.append((result.history, engine))
    return out


def test_run_cv_reports_the_mean_of_independent_fold_fits():
    cfg = tiny_config(epochs=6, hidden=(16,))
    seen = []
    summary = run_cv(cfg, 4, callbacks=[seen.append])
    runs = _independent_folds(cfg, 4)
    assert len(seen) == 6
    for e, row in enumerate(seen):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert row[key] == pytest.approx(np.mean([h[e][key] for h, _ in runs]), rel=1e-12)
    for i, (history, _) in enumerate(runs):
        assert summary[f"val_accuracy_fold{i}"] == history[-1]["val_accuracy"]
    assert summary["val_accuracy"] == pytest.approx(seen[-1]["val_accuracy"], rel=1e-12)
    assert summary["cv_folds"] == 4 and np.isnan(summary["test_accuracy"])


def test_run_cv_early_stopping_and_pruning_act_on_the_mean():
    cfg = tiny_config(epochs=60, hidden=(32,), lr=0.05, batch_size=8)
    cfg.data.noise = 0.35
    cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, patience=4)
    summary = run_cv(cfg, 3)
    plain = replace(cfg, trainer=replace(cfg.trainer, early_stopping=EarlyStoppingConfig(False)))
    mean = np.mean([[r["val_loss"] for r in h] for h, _ in _independent_folds(plain, 3)], axis=0)
    best = int(np.argmin(mean[: summary["epochs_run"]])) + 1
    assert summary["stop_reason"] == "early_stopping"
    assert summary["best_epoch"] == best == summary["refit_epochs"]
    assert summary["epochs_run"] == best + 4
    assert summary["val_loss"] == pytest.approx(mean[best - 1], rel=1e-6)  # restored folds

    pruned = run_cv(cfg, 3,
                    callbacks=[lambda row: "pruned" if row["val_loss"] < mean[2] else None])
    assert pruned["stop_reason"] == "pruned"
    assert pruned["epochs_run"] == int(np.argmax(mean < mean[2])) + 1


def test_fold_ensemble_averages_member_probabilities(tmp_path):
    cfg = tiny_config(epochs=5, hidden=(16,), data="spirals")
    summary = run_cv(cfg, 3, out_dir=tmp_path, evaluate_test=True)
    assert summary["fold_checkpoints"] == [f"model_fold{i}.npz" for i in range(3)]
    assert {"metrics.csv", "summary.json"} <= {p.name for p in tmp_path.iterdir()}
    predictor = fold_ensemble(tmp_path)
    X_raw, y = raw_test_split(cfg.data)
    by_hand = []
    for i in range(3):
        ckpt = C.load(tmp_path / f"model_fold{i}.npz")  # the model.npz format
        assert ckpt.meta["cv"]["fold"] == i and ckpt.meta["standardized_on"] == f"fold {i} of 3"
        X_std = ((X_raw - ckpt.mean) / ckpt.std).astype(ckpt.params.dtype)
        z = predict_logits(ckpt.params, ckpt.spec, X_std).astype(np.float64)  # (n, 3)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        by_hand.append(e / e.sum(axis=1, keepdims=True))
    P = np.mean(by_hand, axis=0)
    np.testing.assert_allclose(predictor.scores_raw(X_raw), P, rtol=1e-5, atol=1e-6)
    assert not np.allclose(by_hand[0], by_hand[1])  # the members do differ
    acc = np.mean(P.argmax(axis=1) == y)
    nll = -np.mean(np.log(P[np.arange(len(y)), y]))
    assert summary["test_accuracy"] == pytest.approx(acc)
    assert summary["test_loss"] == pytest.approx(nll, rel=1e-5)
    assert evaluate_ensemble(predictor) == pytest.approx(
        {"test_loss": summary["test_loss"], "test_accuracy": summary["test_accuracy"],
         "n_test": len(y)})
    # no single standardization fits members standardized on different folds
    with pytest.raises(ConfigError, match="standardized differently"):
        predictor.standardize(X_raw[:2])
    with pytest.raises(C.CheckpointError, match="cross-validation fold model"):
        predictor.load_data()


# ------------------------------------------------------------------ refit


def test_refit_trains_on_train_val_for_the_given_epochs(tmp_path):
    cfg = tiny_config(epochs=9, hidden=(16,))
    summary = refit(cfg, 4, out_dir=tmp_path)
    assert summary["epochs_run"] == 4 and summary["stop_reason"] == "refit_epochs"
    assert np.isnan(summary["val_loss"]) and np.isfinite(summary["test_accuracy"])
    ds = refit_data(cfg.data)
    raw = load_raw(cfg.data)
    train, val, _ = split_parts(raw, cfg.data)
    assert len(ds.train.y) == len(train) + len(val) and len(ds.val.y) == 0
    np.testing.assert_allclose(ds.mean, raw.X[np.concatenate([train, val])].mean(axis=0))
    predictor = load_predictor([tmp_path])  # an ordinary checkpoint, its data rebuilt
    rebuilt = predictor.load_data()
    S = predictor.scores(rebuilt.test.X)
    assert np.mean(predictor.predict_index(S) == rebuilt.test.y) == summary["test_accuracy"]
    with pytest.raises(ConfigError, match="refit epochs"):
        refit(cfg, 10)


def test_refit_replays_the_cross_validation_lr_schedule():
    cfg = tiny_config(epochs=12, optimizer="sgd", lr=0.1)
    cfg.scheduler = SchedulerConfig(name="plateau", patience=0, factor=0.5, threshold=0.05)
    cv_rows = []
    summary = run_cv(cfg, 3, callbacks=[cv_rows.append])
    assert len(set(summary["refit_base_lrs"])) > 1  # the plateau did cut the lr
    refit_rows = []
    refit_from_summary(cfg, summary, callbacks=[refit_rows.append])
    n = summary["refit_epochs"]
    assert [r["lr"] for r in refit_rows] == [r["lr"] for r in cv_rows[:n]]


# ------------------------------------------------------------------ the measurement script


def test_measure_cv_rank_rules_and_tie_break():
    import importlib.util
    from pathlib import Path

    import pandas as pd

    path = Path(__file__).resolve().parents[1] / "scripts" / "measure_cv.py"
    spec = importlib.util.spec_from_file_location("measure_cv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    group = pd.DataFrame({"cv_val_acc": [0.9, 0.95, 0.95, 0.5],
                          "cv_val_loss": [0.3, 0.2, 0.1, 2.0]})
    acc = module.rank_scores(group, module.RULES["cv val_accuracy"])
    assert acc.tolist() == [3.0, 1.5, 1.5, 4.0]  # tied configurations share their mean rank
    tie_break = module.rank_scores(group, module.RULES["cv val_acc, loss tie-break"])
    assert tie_break.tolist() == [3.0, 2.0, 1.0, 4.0]
    loss = module.rank_scores(group, module.RULES["cv val_loss"])
    assert loss.tolist() == [3.0, 2.0, 1.0, 4.0]
