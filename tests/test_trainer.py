"""Training loop: early stopping, restoring the best weights, callbacks, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import EarlyStoppingConfig, SchedulerConfig, TrainerConfig
from core.data import load_dataset
from core.engines import make_engine
from core.experiment import build, targets
from core.trainer import fit
from tests.helpers import tiny_config


def setup(cfg):
    ds = load_dataset(cfg.data, dtype=cfg.trainer.dtype)
    spec, params = build(cfg, ds)
    engine = make_engine(cfg, spec, params)
    T = lambda s: targets(s.y, spec.loss, spec.n_out, cfg.trainer.dtype)  # noqa: E731
    return engine, (ds.train.X, T(ds.train), ds.val.X, T(ds.val))


def test_early_stopping_stops_after_patience_and_restores_best():
    cfg = tiny_config(epochs=30)
    # min_delta this large: nothing after epoch 1 counts as an improvement
    cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, patience=3, min_delta=1e9, restore_best=True)
    engine, arrays = setup(cfg)
    snapshots = []
    result = fit(engine, cfg, *arrays, callbacks=[lambda row: snapshots.append(engine.get_params())])
    assert result.stop_reason == "early_stopping"
    assert len(result.history) == 1 + 3
    assert result.best_epoch == 1
    np.testing.assert_array_equal(engine.get_params(), snapshots[0])
    assert not np.array_equal(snapshots[0], snapshots[-1])


def test_early_stopping_on_real_improvement_keeps_best_epoch_weights():
    cfg = tiny_config(epochs=40, lr=0.3, optimizer="sgd", hidden=(32,))
    cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, monitor="val_accuracy", patience=4)
    engine, arrays = setup(cfg)
    snapshots = []
    result = fit(engine, cfg, *arrays, callbacks=[lambda row: snapshots.append(engine.get_params())])
    val_acc = [row["val_accuracy"] for row in result.history]
    assert result.best_epoch == int(np.argmax(val_acc)) + 1  # first maximum
    np.testing.assert_array_equal(engine.get_params(), snapshots[result.best_epoch - 1])
    if result.stop_reason == "early_stopping":
        assert len(result.history) == result.best_epoch + 4


def test_no_restore_keeps_last_weights():
    cfg = tiny_config(epochs=30)
    cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, patience=2, min_delta=1e9, restore_best=False)
    engine, arrays = setup(cfg)
    snapshots = []
    fit(engine, cfg, *arrays, callbacks=[lambda row: snapshots.append(engine.get_params())])
    np.testing.assert_array_equal(engine.get_params(), snapshots[-1])


def test_callback_can_stop_training_with_its_reason():
    cfg = tiny_config(epochs=10)
    engine, arrays = setup(cfg)
    seen = []
    result = fit(engine, cfg, *arrays, callbacks=[lambda row: seen.append(row["epoch"]) or ("pruned" if row["epoch"] == 3 else None)])
    assert result.stop_reason == "pruned"
    assert seen == [1, 2, 3]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_divergence_stops_with_reason():
    cfg = tiny_config(epochs=20, optimizer="sgd", lr=1e6, hidden=(16, 16))
    cfg.layers.activation = "relu"
    engine, arrays = setup(cfg)
    result = fit(engine, cfg, *arrays)
    assert result.stop_reason == "diverged"
    assert len(result.history) < 20


def test_history_rows_and_lr_follow_schedule():
    cfg = tiny_config(epochs=6, optimizer="sgd", lr=0.1)
    cfg.scheduler = SchedulerConfig(name="step", step_size=2, gamma=0.5)
    engine, arrays = setup(cfg)
    result = fit(engine, cfg, *arrays)
    assert [r["lr"] for r in result.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    for row in result.history:
        assert set(row) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
        assert 0 <= row["val_accuracy"] <= 1


def test_plateau_reduces_lr_when_val_loss_stalls():
    cfg = tiny_config(epochs=12, optimizer="sgd", lr=0.1)
    # threshold 1.0: an improvement would need the loss to drop to 0, so every epoch is "bad"
    cfg.scheduler = SchedulerConfig(name="plateau", patience=1, factor=0.5, threshold=1.0, min_lr=0.02)
    engine, arrays = setup(cfg)
    lrs = [r["lr"] for r in fit(engine, cfg, *arrays).history]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.02)
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_config_is_bit_identical(dtype):
    def once():
        cfg = tiny_config(epochs=4)
        cfg.trainer = TrainerConfig(epochs=4, batch_size=16, dtype=dtype, seed=7)
        cfg.regularization.dropout = 0.3
        engine, arrays = setup(cfg)
        result = fit(engine, cfg, *arrays)
        return engine.get_params(), [(r["train_loss"], r["val_loss"]) for r in result.history]

    (p1, h1), (p2, h2) = once(), once()
    assert p1.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(p1, p2)
    assert h1 == h2


def test_different_seed_differs():
    a, b = tiny_config(), tiny_config()
    b.trainer.seed = 1
    ea, arr_a = setup(a)
    eb, arr_b = setup(b)
    fit(ea, a, *arr_a)
    fit(eb, b, *arr_b)
    assert not np.array_equal(ea.get_params(), eb.get_params())
