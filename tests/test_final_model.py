"""The two final models of a cross-validation (core.final_model): the fold ensemble and the
model refit on train+val."""

from __future__ import annotations

import numpy as np
import pytest

from core import checkpoint as C
from core.config import ConfigError, SchedulerConfig
from core.crossval import run_cv
from core.data import load_raw, raw_test_split, refit_data, split_parts
from core.final_model import evaluate_ensemble, fold_ensemble, refit, refit_from_summary
from core.network import predict_logits
from core.predict import load_predictor
from tests.helpers import tiny_config

# ------------------------------------------------------------------ fold ensemble


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
