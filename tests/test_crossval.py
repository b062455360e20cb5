"""K-fold cross-validation (core.crossval): the folds and lockstep training through run_cv."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.config import ConfigError, DataConfig, EarlyStoppingConfig
from core.crossval import cv_data, fold_indices, fold_seed, run_cv
from core.data import load_raw, split_parts
from core.engines import make_engine
from core.experiment import build, targets
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
