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


# ------------------------------------------------------------------ K folds in lockstep


def _reference_fit(engine, cfg, X_train, T_train, X_val, T_val):
    """The single-engine loop as it was before fit_folds (no callbacks): the K=1 reference."""
    import math

    from core.engines.base import n_batches
    from core.schedules import ReduceLROnPlateau, epoch_lrs
    from core.trainer import is_better, monitor_mode

    tr, es, sch = cfg.trainer, cfg.trainer.early_stopping, cfg.scheduler
    engine.set_train_data(X_train, T_train)
    n = len(X_train)
    steps = n_batches(n, tr.batch_size)
    rng = np.random.default_rng(tr.seed)
    plateau = ReduceLROnPlateau(sch, cfg.optimizer.lr) if sch.name == "plateau" else None
    mode = monitor_mode(es.monitor, es.mode)
    best_value, best_epoch, best_params, wait, history = float("nan"), 0, None, 0, []
    for epoch in range(tr.epochs):
        base_lr = plateau.lr if plateau is not None else cfg.optimizer.lr
        lrs = epoch_lrs(epoch, steps, sch, base_lr, tr.epochs)
        train_loss, train_acc = engine.train_epoch(rng.permutation(n), lrs, tr.batch_size)
        val_loss, val_acc = engine.evaluate(X_val, T_val)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": float(lrs[0])}
        history.append(row)
        if is_better(row[es.monitor], best_value, mode, es.min_delta):
            best_value, best_epoch, wait = row[es.monitor], epoch + 1, 0
            if es.enabled and es.restore_best:
                best_params = engine.get_params()
        else:
            wait += 1
        if plateau is not None:
            plateau.step(row[sch.monitor])
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            break
        if es.enabled and wait >= max(es.patience, 1):
            break
    if best_params is not None and best_epoch != len(history):
        engine.set_params(best_params)
    return history, best_epoch


def _k1_case(name: str, engine: str):
    cfg = tiny_config(epochs=25, engine=engine, hidden=(16, 8), data="spirals")
    if name == "dropout_early_stopping":
        cfg.regularization.dropout = 0.2
        cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, patience=3)
    elif name == "plateau":
        cfg.optimizer.name, cfg.optimizer.lr = "sgd", 0.2
        cfg.scheduler = SchedulerConfig(name="plateau", patience=1, factor=0.5)
    elif name == "cosine_accuracy_monitor":
        cfg.scheduler = SchedulerConfig(name="cosine", warmup_epochs=2)
        cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, monitor="val_accuracy",
                                                         patience=4)
    return cfg


@pytest.mark.parametrize("engine", ["numpy", "cpu"])
@pytest.mark.parametrize("case", ["dropout_early_stopping", "plateau", "cosine_accuracy_monitor"])
def test_one_fold_is_bit_identical_to_the_single_engine_loop(engine, case):
    cfg = _k1_case(case, engine)
    ref_engine, arrays = setup(cfg)
    ref_history, ref_best = _reference_fit(ref_engine, cfg, *arrays)
    new_engine, arrays = setup(cfg)
    result = fit(new_engine, cfg, *arrays)
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
    assert rows == ref_history  # same keys, same order, same values
    assert result.best_epoch == ref_best
    assert new_engine.get_params().tobytes() == ref_engine.get_params().tobytes()


K = 3


def _folds(cfg):
    """K independent (cfg, engine, arrays): different data seeds and trainer seeds."""
    from dataclasses import replace

    out = []
    for i in range(K):
        cfg_i = replace(
            cfg, data=replace(cfg.data, seed=i), trainer=replace(cfg.trainer, seed=10 + i)
        )
        engine, arrays = setup(cfg_i)
        out.append((cfg_i, engine, arrays))
    return out


def _lockstep(cfg, callbacks=()):
    from core.trainer import Fold, fit_folds

    parts = _folds(cfg)
    folds = [Fold(engine, *arrays, seed=cfg_i.trainer.seed) for cfg_i, engine, arrays in parts]
    return fit_folds(folds, cfg, callbacks), [f.engine for f in folds]


def _independent(cfg):
    """Each fold alone, early stopping off, its params recorded after every epoch."""
    runs = []
    for cfg_i, engine, arrays in _folds(cfg):
        cfg_i.trainer.early_stopping = EarlyStoppingConfig(enabled=False)
        snaps = []
        snap = lambda row, e=engine, s=snaps: s.append(e.get_params())  # noqa: E731
        result = fit(engine, cfg_i, *arrays, callbacks=[snap])
        runs.append((result.history, snaps))
    return runs


KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def test_lockstep_rows_are_the_means_of_independent_fits():
    cfg = tiny_config(epochs=8, hidden=(16,))
    cfg.regularization.dropout = 0.1
    seen = []
    result, engines = _lockstep(cfg, callbacks=[seen.append])
    runs = _independent(cfg)
    assert seen == result.history and len(seen) == 8
    for e, row in enumerate(seen):
        for key in KEYS:
            folds = [history[e][key] for history, _ in runs]
            assert row[key] == pytest.approx(sum(folds) / K, rel=1e-12)
        for i, (history, _) in enumerate(runs):
            assert row[f"val_accuracy_fold{i}"] == history[e]["val_accuracy"]
            assert row[f"val_loss_fold{i}"] == history[e]["val_loss"]
    for engine, (_, snaps) in zip(engines, runs):  # folds never interact
        np.testing.assert_array_equal(engine.get_params(), snaps[-1])


def test_early_stopping_watches_the_mean_and_restores_every_fold():
    cfg = tiny_config(epochs=60, hidden=(32,), lr=0.05, batch_size=8)
    cfg.data.noise = 0.35  # noisy moons: the validation loss turns up
    cfg.trainer.early_stopping = EarlyStoppingConfig(enabled=True, patience=4, restore_best=True)
    result, engines = _lockstep(cfg)
    runs = _independent(cfg)
    mean = np.mean([[row["val_loss"] for row in history] for history, _ in runs], axis=0)
    best, stop = 0, len(mean)  # the rule on the mean curve: strict improvement, patience 4
    for e in range(len(mean)):
        if best == 0 or mean[e] < mean[best - 1]:
            best = e + 1
        elif e + 1 - best >= 4:
            stop = e + 1
            break
    assert result.stop_reason == "early_stopping"
    assert (result.best_epoch, len(result.history)) == (best, stop)
    assert result.best_value == pytest.approx(mean[best - 1], rel=1e-12)
    fold_bests = [int(np.argmin([r["val_loss"] for r in h[:stop]])) + 1 for h, _ in runs]
    assert any(b != best for b in fold_bests)  # the mean's epoch, not each fold's own
    for engine, (_, snaps) in zip(engines, runs):
        np.testing.assert_array_equal(engine.get_params(), snaps[best - 1])


def test_pruning_callback_sees_the_mean_and_stops_every_fold():
    cfg = tiny_config(epochs=20, hidden=(16,))
    runs = _independent(cfg)
    mean_acc = [np.mean([h[e]["val_accuracy"] for h, _ in runs]) for e in range(20)]
    threshold = mean_acc[4]  # prune at the first epoch whose mean reaches epoch 5's
    seen = []

    def prune(row):
        seen.append(row["val_accuracy"])
        return "pruned" if row["val_accuracy"] >= threshold else None

    result, engines = _lockstep(cfg, callbacks=[prune])
    first = next(e for e, v in enumerate(mean_acc) if v >= threshold) + 1
    assert result.stop_reason == "pruned" and len(result.history) == first
    assert seen == pytest.approx(mean_acc[:first], rel=1e-12)
    for engine, (_, snaps) in zip(engines, runs):
        np.testing.assert_array_equal(engine.get_params(), snaps[first - 1])


def test_plateau_base_lrs_replay():
    from core.trainer import Fold, fit_folds

    cfg = tiny_config(epochs=12, optimizer="sgd", lr=0.1)
    cfg.scheduler = SchedulerConfig(name="plateau", patience=1, factor=0.5, threshold=1.0,
                                    min_lr=0.02)
    engine, arrays = setup(cfg)
    recorded = fit(engine, cfg, *arrays)
    base_lrs = recorded.extra["base_lrs"]
    assert base_lrs[0] == 0.1 and base_lrs[-1] == pytest.approx(0.02)
    empty = (arrays[2][:0], arrays[3][:0])  # no validation split: the plateau has nothing to watch
    engine2, _ = setup(cfg)
    replayed = fit_folds([Fold(engine2, arrays[0], arrays[1], *empty, seed=cfg.trainer.seed)], cfg,
                         base_lrs=base_lrs)
    assert replayed.extra["base_lrs"] == base_lrs
    assert [r["lr"] for r in replayed.history] == [r["lr"] for r in recorded.history]
    losses = [[r["train_loss"] for r in res.history] for res in (replayed, recorded)]
    assert losses[0] == losses[1]
    assert replayed.stop_reason == "max_epochs" and np.isnan(replayed.history[0]["val_loss"])
