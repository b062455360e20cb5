"""run(cfg) end to end: files written, checkpoints, bad input, and the digits quality bar."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from core import checkpoint as C
from core.config import ConfigError, DataConfig, TrainerConfig
from core.experiment import run, targets
from core.network import predict_logits
from tests.helpers import tiny_config


def test_run_writes_metrics_summary_and_checkpoint(tmp_path):
    cfg = tiny_config(epochs=3)
    summary = run(cfg, out_dir=tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert saved["config"]["optimizer"]["name"] == "adam"
    assert saved["epochs_run"] == 3 and saved["stop_reason"] == "max_epochs"
    # the checkpoint reproduces the reported test accuracy on its own
    ckpt = C.load(tmp_path / "model.npz")
    from core.data import load_dataset

    ds = load_dataset(cfg.data)
    logits = predict_logits(ckpt.params, ckpt.spec, ds.test.X)
    acc = np.mean(np.argmax(logits, 1) == ds.test.y)
    assert acc == pytest.approx(summary["test_accuracy"])
    np.testing.assert_allclose(ckpt.mean, ds.mean)


def test_checkpoint_round_trip_is_exact(tmp_path):
    run(tiny_config(epochs=2), out_dir=tmp_path)
    a = C.load(tmp_path / "model.npz")
    C.save(tmp_path / "copy.npz", a)
    b = C.load(tmp_path / "copy.npz")
    np.testing.assert_array_equal(a.params, b.params)
    assert a.spec == b.spec and a.params.dtype == b.params.dtype
    np.testing.assert_array_equal(a.classes, b.classes)
    X = np.random.default_rng(0).normal(size=(4, 2))
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
    run(tiny_config(epochs=1), out_dir=tmp_path)
    good = tmp_path / "model.npz"
    with pytest.raises(C.CheckpointError, match="no such file"):
        C.load(tmp_path / "nope.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(C.CheckpointError, match="not a readable"):
        C.load(truncated)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(C.CheckpointError, match="not a readable"):
        C.load(text)
    ckpt = C.load(good)
    ckpt.params = ckpt.params[:-1]
    np.savez(tmp_path / "short.npz", format="nnsweep-checkpoint", params=ckpt.params, spec=ckpt.spec.to_json(), mean=ckpt.mean, std=ckpt.std)
    with pytest.raises(C.CheckpointError, match="its spec needs"):
        C.load(tmp_path / "short.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(C.CheckpointError, match="not an nnsweep checkpoint"):
        C.load(tmp_path / "other.npz")
    assert C.load(good).params.size > 0  # the good file is untouched


def test_targets_encoding():
    y = np.array([2, 0, 1])
    np.testing.assert_array_equal(targets(y, "cross_entropy", 3, "float64"), np.eye(3)[[2, 0, 1]])
    np.testing.assert_array_equal(targets(np.array([1, 0]), "bce", 1, "float32"), [[1], [0]])


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_other_losses_train(loss, tmp_path):
    cfg = tiny_config(epochs=40, lr=0.02, hidden=(16,))
    cfg.trainer.loss = loss
    summary = run(cfg)
    assert summary["val_accuracy"] > 0.8


def test_bce_on_three_classes_names_the_field():
    cfg = tiny_config(data="blobs")
    cfg.trainer.loss = "bce"
    with pytest.raises(ConfigError, match="trainer.loss"):
        run(cfg)


def test_bad_values_fail_before_training():
    with pytest.raises(ConfigError, match="trainer.batch_size"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ConfigError, match="regularization.dropout"):
        tiny_config().regularization.__class__(dropout=1.0)
    with pytest.raises(ConfigError, match="data.name"):
        DataConfig(name="mnist")


def test_digits_quality_bar():
    """A small MLP on scikit-learn's bundled digits reaches >= 95% test accuracy."""
    cfg = tiny_config(data="digits", hidden=(64,), epochs=30, batch_size=32, lr=2e-3)
    cfg.layers.activation = "relu"
    cfg.trainer.early_stopping.enabled = True
    cfg.trainer.early_stopping.patience = 8
    t0 = time.perf_counter()
    summary = run(cfg)
    print(f"digits: test acc {summary['test_accuracy']:.4f}, epochs {summary['epochs_run']}, "
          f"{time.perf_counter() - t0:.2f} s")
    assert summary["test_accuracy"] >= 0.95


def test_a_network_larger_than_memory_is_one_line_before_allocating():
    import pytest

    from core.config import ConfigError, LayersConfig
    from core.datasets import memory_bytes
    from core.experiment import run

    cfg = tiny_config(data="moons")
    width = 100_000
    cfg.layers = LayersConfig(hidden=[width, width], activation="tanh")
    n_params = (2 * width + width) + (width * width + width) + (width * 2 + 2)  # moons: 2 in, 2 out
    with pytest.raises(ConfigError, match=rf"layers.hidden: \[{width}, {width}\] makes {n_params:,} "):
        run(cfg)
    assert 6 * 4 * n_params > memory_bytes()


@pytest.mark.parametrize(("hidden", "n_in", "batch", "threads", "expected"), [
    ([120, 40], 64, 32, None, 1),  # digits: 32 x 64 x 120 = 0.25 M multiply-adds a product
    ([256, 128], 784, 128, None, None),  # 128 x 784 x 256 = 25.7 M: the library's threads
    ([256, 256], 64, 31, None, 1),  # 31 x 256 x 256 = 2,031,616 < 2**21
    ([256, 256], 64, 32, None, None),  # 32 x 256 x 256 = 2,097,152 = 2**21
    ([8], 2, 16, 3, 3),  # engine.threads wins
])
def test_blas_threads_follow_the_largest_product(hidden, n_in, batch, threads, expected):
    from core.config import EngineConfig, LayersConfig, RegularizationConfig
    from core.experiment import blas_threads
    from core.network import build_spec

    cfg = tiny_config(batch_size=batch)
    cfg.engine = EngineConfig(threads=threads)
    spec = build_spec(LayersConfig(hidden=hidden), RegularizationConfig(), n_in=n_in, n_out=10,
                      loss="cross_entropy")
    assert blas_threads(cfg, spec) == expected


def test_a_worker_loads_each_data_set_once_read_only_and_rereads_a_changed_file(tmp_path):
    from core.data import write_file
    from core.experiment import cached_dataset

    cfg = DataConfig(name="moons", n_samples=120)
    a, b = cached_dataset(cfg, "float32"), cached_dataset(DataConfig(name="moons", n_samples=120), "float32")
    assert a is b and not a.train.X.flags.writeable
    with pytest.raises(ValueError):
        a.train.X[0, 0] = 1.0
    assert cached_dataset(DataConfig(name="moons", n_samples=121), "float32") is not a
    path = tmp_path / "d.csv"
    X = np.arange(40, dtype=float).reshape(20, 2)
    write_file(path, X, np.arange(20) % 2)
    first = cached_dataset(DataConfig(name="file", path=str(path)), "float32")
    write_file(path, X * 3, np.arange(20) % 2)
    import os

    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = cached_dataset(DataConfig(name="file", path=str(path)), "float32")
    assert second is not first and second.mean[0] == pytest.approx(3 * first.mean[0])


def _reuse_case(case: str):
    """(config, callbacks) of a run whose final weights come from a known epoch."""
    from core.config import EarlyStoppingConfig, RegularizationConfig

    def es(**kw):
        return EarlyStoppingConfig(enabled=True, patience=1, **kw)

    cfg = tiny_config(epochs=12, lr=0.2)
    callbacks = []
    if case == "restored":  # early stopping takes the weights back to the best epoch
        cfg.trainer.early_stopping = es()
    elif case == "not_restored":
        cfg.trainer.early_stopping = es(restore_best=False)
    elif case == "pruned":  # a callback stops it; the best epoch's weights are restored
        cfg.trainer.early_stopping = es()
        cfg.trainer.early_stopping.patience = 50
        callbacks = [lambda row: "pruned" if row["epoch"] >= 9 else None]
    elif case == "digits":  # val rows > 256: evaluated in several blocks on the CPU engine
        cfg = tiny_config(data="digits", hidden=(16,), epochs=6, batch_size=32, lr=0.05,
                          regularization=RegularizationConfig(dropout=0.3))
        cfg.trainer.early_stopping = es()
    return cfg, callbacks


@pytest.mark.parametrize("engine", ["numpy", "cpu"])
@pytest.mark.parametrize("case", ["restored", "not_restored", "max_epochs", "pruned", "digits"])
def test_final_val_metrics_taken_from_their_epoch_equal_a_fresh_evaluation(engine, case,
                                                                           monkeypatch):
    """run() does not evaluate val again after training: the val (loss, accuracy) of the
    weights the engine holds is their epoch's row. Exactly what evaluating them again
    gives, whether early stopping restored an earlier epoch or not."""
    import core.experiment as E

    seen = []
    real = E.evaluate_splits

    def checked(engine_, ds, T, *, evaluate_test, known=None):
        final = real(engine_, ds, T, evaluate_test=evaluate_test, known=known)
        seen.append((known, final["val"], engine_.evaluate(ds.val.X, T["val"])))
        return final

    monkeypatch.setattr(E, "evaluate_splits", checked)
    cfg, callbacks = _reuse_case(case)
    cfg.engine.name = engine
    summary = run(cfg, callbacks=callbacks)
    [(known, final_val, fresh)] = seen
    assert known == {"val": final_val}  # taken from the history, not evaluated
    assert final_val == fresh  # to the last bit
    assert (summary["val_loss"], summary["val_accuracy"]) == fresh
    if case == "max_epochs":
        assert summary["stop_reason"] == "max_epochs"
    else:  # the best epoch is not the last: restored, or (not_restored) the last kept
        assert summary["best_epoch"] < summary["epochs_run"], summary


def test_a_diverged_run_is_evaluated_afresh():
    from core.experiment import held_metrics
    from core.trainer import FitResult

    rows = [{"val_loss": 0.5, "val_accuracy": 0.9}, {"val_loss": float("nan"), "val_accuracy": 0.1}]
    result = FitResult(rows, 1, 0.5, "diverged", 0.0, "val_loss", params_epoch=2)
    assert held_metrics(result) == {}
    result.params_epoch = 1
    assert held_metrics(result) == {"val": (0.5, 0.9)}
