"""Predictions from checkpoints: values against a direct forward pass, ensembles, csv, figures.

Tiny models are trained once per module with core.experiment.run on moons and digits; every
prediction is compared with softmax(logits) computed here from the checkpoint's own arrays.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from core import checkpoint as C
from core.config import ConfigError, DataConfig, TrainerConfig
from core.data import load_dataset, write_file
from core.experiment import run
from core.functional import softmax
from core.network import predict_logits
from core.predict import (
    Predictor,
    confusion_matrix,
    load_predictor,
    member_table,
    read_features,
    resolve_checkpoint,
)
from tests.helpers import load_script, tiny_config

main = load_script("predict").main


def _train(out, data: str, *, seed: int = 0, epochs: int = 4, hidden=(8,)):
    cfg = tiny_config(data=data, epochs=epochs, hidden=hidden)
    cfg.trainer = TrainerConfig(epochs=epochs, batch_size=32, seed=seed)
    cfg.trainer.early_stopping.enabled = False
    run(cfg, out_dir=out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "moons": _train(root / "moons", "moons"),
        "moons_b": _train(root / "moons_b", "moons", seed=1),  # same data, other weights
        "digits": _train(root / "digits", "digits", epochs=3, hidden=(16,)),
    }


def reference_probs(run_dir, X_raw: np.ndarray) -> np.ndarray:
    """softmax of the logits on (X_raw - mean) / std, straight from the checkpoint arrays."""
    ckpt = C.load(run_dir / "model.npz")
    X = ((X_raw - ckpt.mean) / ckpt.std).astype(ckpt.params.dtype)
    return softmax(predict_logits(ckpt.params, ckpt.spec, X).astype(np.float64))


def raw_test_split(run_dir):
    ckpt = C.load(run_dir / "model.npz")
    ds = load_dataset(DataConfig(**ckpt.meta["config"]["data"]), dtype=str(ckpt.params.dtype))
    return ds, ds.mean + ds.std * ds.test.X.astype(np.float64)  # raw test features


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_ensemble_of_identical_checkpoints_equals_the_single_model(runs, data, tmp_path):
    copies = [runs[data] / "model.npz"]
    for i in range(2):
        copies.append(tmp_path / f"copy{i}.npz")
        shutil.copy(copies[0], copies[-1])
    single, ensemble = load_predictor([runs[data]]), load_predictor(copies)
    ds, X_raw = raw_test_split(runs[data])
    np.testing.assert_allclose(ensemble.scores(ds.test.X), single.scores(ds.test.X), rtol=1e-12)
    np.testing.assert_allclose(
        single.scores(ds.test.X), reference_probs(runs[data], X_raw), rtol=1e-4, atol=1e-6
    )  # float32 standardization vs float64
    table = member_table(ensemble, ds.test.X, ds.test.y)
    acc = np.mean(np.argmax(reference_probs(runs[data], X_raw), 1) == ds.test.y)
    assert list(table["model"]) == ["member 0", "member 1", "member 2", "ensemble"]
    np.testing.assert_allclose(table["test_accuracy"], acc)


def test_ensemble_averages_the_members_probabilities(runs, tmp_path, capsys):
    ds, X_raw = raw_test_split(runs["moons"])
    P_a, P_b = (reference_probs(runs[k], X_raw) for k in ("moons", "moons_b"))
    assert not np.allclose(P_a, P_b)  # two different members, or the test proves nothing
    ensemble = load_predictor([runs["moons"], runs["moons_b"]])
    np.testing.assert_allclose(ensemble.scores(ds.test.X), (P_a + P_b) / 2, rtol=1e-4, atol=1e-6)

    assert (
        main(["--ensemble", str(runs["moons"]), str(runs["moons_b"]), "--out-dir", str(tmp_path)])
        == 0
    )
    table = pd.read_csv(tmp_path / "ensemble.csv")
    expected = [np.mean(np.argmax(P, 1) == ds.test.y) for P in (P_a, P_b, (P_a + P_b) / 2)]
    np.testing.assert_allclose(table["test_accuracy"], expected)
    assert "ensemble" in capsys.readouterr().out


def test_ensemble_of_different_data_is_refused(runs):
    with pytest.raises(ConfigError, match="paths: .* does not match"):
        load_predictor([runs["moons"], runs["digits"]])


# ----------------------------------------------------------------------------- samples and csv


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_index_prediction_equals_the_predictions_csv(runs, data, tmp_path, capsys):
    ds, X_raw = raw_test_split(runs[data])
    labels = ds.classes[ds.test.y]
    write_file(tmp_path / "test.csv", X_raw, labels)  # columns x0.. and label
    out = tmp_path / "preds.csv"
    assert main([str(runs[data]), "--input", str(tmp_path / "test.csv"), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == len(ds.test.y) and list(df["true"]) == list(labels)
    P = reference_probs(runs[data], X_raw)
    prob_cols = [f"prob_{c}" for c in ds.classes]
    np.testing.assert_allclose(df[prob_cols].to_numpy(), P, rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    for i in (0, 3, len(ds.test.y) - 1):
        assert main([str(runs[data]), "--index", str(i)]) == 0
        text = capsys.readouterr().out
        predicted = re.search(r"predicted class: (\S+)\s+true (\S+)", text)
        assert predicted.group(1) == str(df["predicted"][i])
        assert predicted.group(2) == str(labels[i])


def test_x_in_raw_units_equals_prediction_on_the_standardized_row(runs, capsys):
    ds, X_raw = raw_test_split(runs["moons"])
    predictor = load_predictor([runs["moons"]])
    x = X_raw[5]
    np.testing.assert_allclose(
        predictor.scores(predictor.standardize(x)),
        predictor.scores(ds.test.X[5:6]),
        rtol=1e-5,
        atol=1e-7,
    )
    assert main([str(runs["moons"]), "--x", *(repr(float(v)) for v in x)]) == 0
    printed = re.findall(r"probability (\d\.\d+)", capsys.readouterr().out)
    np.testing.assert_allclose(
        [float(p) for p in printed], reference_probs(runs["moons"], x[None])[0], atol=6e-5
    )  # printed with 4 decimals


def test_csv_columns_by_name_in_any_order(runs, tmp_path):
    ds, X_raw = raw_test_split(runs["moons"])
    predictor = load_predictor([runs["moons"]])
    pd.DataFrame({"label": ds.test.y, "x1": X_raw[:, 1], "note": 1, "x0": X_raw[:, 0]}).to_csv(
        tmp_path / "shuffled.csv", index=False
    )
    features = read_features(tmp_path / "shuffled.csv", predictor)
    np.testing.assert_array_equal(features.X, X_raw)
    np.testing.assert_array_equal(features.y, ds.test.y)


def test_regression_predictions_are_values(tmp_path, capsys):
    x = np.linspace(-3, 3, 120)[:, None]
    write_file(tmp_path / "curve.npz", x, np.sin(x[:, 0]) + 0.5 * x[:, 0])
    cfg = tiny_config(data="moons", epochs=3)
    cfg.data = DataConfig(name="file", path=str(tmp_path / "curve.npz"))
    run(cfg, out_dir=tmp_path / "run")
    assert (
        main(
            [
                str(tmp_path / "run"),
                "--input",
                str(tmp_path / "curve.npz"),
                "--out",
                str(tmp_path / "preds.csv"),
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "preds.csv")
    ckpt = C.load(tmp_path / "run" / "model.npz")
    expected = predict_logits(ckpt.params, ckpt.spec, ckpt.transform(x))[:, 0]
    assert "value" in df and "predicted" not in df
    np.testing.assert_allclose(df["value"], expected, rtol=1e-5, atol=1e-6)
    assert main([str(tmp_path / "run"), "--confusion"]) == 2  # figures of classes only
    assert "--confusion: needs a classification checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------- figures


def _png_ok(path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    assert path.stat().st_size > 0
    h, w = mpimg.imread(path).shape[:2]
    assert h > 100 and w > 100
    assert not list(path.parent.glob("*.tmp*"))
    return h, w


def test_moons_grid_boundary_and_confusion(runs, tmp_path):
    assert (
        main(
            [
                str(runs["moons"]),
                "--grid",
                "3",
                "--boundary",
                "--confusion",
                "--resolution",
                "60",
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    for name in ("grid_test.png", "boundary_test.png", "confusion_test.png"):
        _png_ok(tmp_path / name)


def test_digits_grid_and_confusion_values(runs, tmp_path):
    from app.predict_figures import plot_confusion, plot_grid

    predictor = load_predictor([runs["digits"]])
    ds, X_raw = raw_test_split(runs["digits"])
    plot_grid(predictor, ds.test.X, ds.test.y, tmp_path / "grid.png", 4, title="digits")
    _png_ok(tmp_path / "grid.png")
    M = plot_confusion(predictor, ds.test.X, ds.test.y, tmp_path / "confusion.png")
    _png_ok(tmp_path / "confusion.png")
    pred = np.argmax(reference_probs(runs["digits"], X_raw), 1)
    direct = np.zeros((10, 10), dtype=int)
    for t, p in zip(ds.test.y, pred, strict=True):
        direct[t, p] += 1
    assert M.sum() == len(ds.test.y)
    np.testing.assert_array_equal(M, direct)


def test_confusion_matrix_counts():
    M = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(M, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_boundary_mesh_probabilities(runs):
    from app.predict_figures import boundary_grid

    predictor = load_predictor([runs["moons"]])
    _, X_raw = raw_test_split(runs["moons"])
    xx, yy, S = boundary_grid(predictor, X_raw, 30)
    assert xx.shape == yy.shape == (30, 30) and S.shape == (30, 30, 2)
    assert xx.min() < X_raw[:, 0].min() and yy.max() > X_raw[:, 1].max()
    np.testing.assert_allclose(S.sum(axis=2), 1.0, rtol=1e-6)
    mesh = np.column_stack([xx.ravel(), yy.ravel()])
    np.testing.assert_allclose(
        S.reshape(-1, 2), reference_probs(runs["moons"], mesh), rtol=1e-4, atol=1e-6
    )


# ----------------------------------------------------------------------------- checkpoints, errors


def test_study_folder_resolves_to_its_best_model(runs, tmp_path):
    shutil.copytree(runs["moons"], tmp_path / "study" / "best")
    assert resolve_checkpoint(tmp_path / "study") == tmp_path / "study" / "best" / "model.npz"
    assert resolve_checkpoint(runs["moons"]) == runs["moons"] / "model.npz"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}"], r"checkpoint: no such file or folder"),
        (["{corrupt}"], r"checkpoint: .* is not a readable \.npz checkpoint"),
        (["{moons}", "--x", "1", "2", "3"], r"--x: got 3 feature values; .* expects 2 \(x0, x1\)"),
        (["{digits}", "--x", "1"], r"expects 64 \(pixel_0_0, .*, pixel_7_7\)"),
        (["{moons}", "--index", "999"], r"--index: 999 is out of range; allowed: 0 <= --index <="),
        (["{digits}", "--boundary"], r"--boundary: needs 2-D data; .* has 64 features"),
        (["{moons}", "--input", "{missing}.csv"], r"--input: no such file"),
        (["{moons}", "--ensemble", "{moons}"], r"checkpoint: give one checkpoint"),
        (["--ensemble", "{moons}", "{digits}"], r"--ensemble: '.*' does not match '.*': "),
        (["{moons}", "--input", "{header_only}.txt"], r"--input: unsupported extension '\.txt'"),
        (
            ["{moons}", "--boundary", "--resolution", "0"],
            r"--resolution: 0 is out of range; allowed: 2 <= --resolution <= 2000",
        ),
        (["{moons}", "--boundary", "--resolution", "1"], r"--resolution: 1 is out of range"),
        (["{moons}", "--boundary", "--resolution", "-5"], r"--resolution: -5 is out of range"),
        (
            ["{moons}", "--boundary", "--resolution", "100000"],
            r"--resolution: 100000 is out of range",
        ),
        (["{moons}", "--grid", "0"], r"--grid: 0 is out of range; allowed: 1 <= --grid <= 30"),
        (["{moons}", "--grid", "31"], r"--grid: 31 is out of range"),
        (
            ["{moons}", "--input", "{header_only}"],
            r"--input: header\.csv has no rows to predict",
        ),
        (["{moons}", "--x", "nan", "1"], r"--x: nan is not a finite number"),
        (["{moons}", "--x", "1", "inf"], r"--x: inf is not a finite number"),
        (
            ["{moons}", "--grid", "2", "--out-dir", "{corrupt}"],
            r"--out-dir: '.*corrupt\.npz' is a file",
        ),
        (
            ["{moons}", "--input", "{corrupt}", "--out", "{corrupt}/p.csv"],
            r"--out: '.*corrupt\.npz' is a file",
        ),
    ],
)
def test_errors_are_one_line(runs, tmp_path, capsys, args, message):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes((runs["moons"] / "model.npz").read_bytes()[:300])
    header_only = tmp_path / "header.csv"
    header_only.write_text("x0,x1,label\n")
    paths = {"missing": tmp_path / "nope", "corrupt": corrupt, "header_only": header_only, **runs}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("predict: error: ")
    assert re.search(message, err), err


def test_predictor_rejects_a_changed_data_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(80, 2))
    write_file(tmp_path / "d.csv", x, (x[:, 0] > 0).astype(int))
    cfg = tiny_config(epochs=1)
    cfg.data = DataConfig(name="file", path=str(tmp_path / "d.csv"))
    run(cfg, out_dir=tmp_path / "run")
    write_file(tmp_path / "d.csv", x * 2, (x[:, 0] > 0).astype(int))
    with pytest.raises(C.CheckpointError, match="does not match the standardization"):
        Predictor([C.load(tmp_path / "run" / "model.npz")], ["run"]).load_data()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resolution", "abc"], "predict: error: --resolution: invalid int value: 'abc'\n"),
        (["--split", "all"], "predict: error: --split: invalid choice: 'all'"),
        (["--index", "1", "--x", "1"], "predict: error: --x: not allowed with argument --index\n"),
    ],
)
def test_argparse_errors_are_one_line(runs, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main([str(runs["moons"]), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("args", [["--boundary", "--resolution", "2"], ["--grid", "1"]])
def test_smallest_figures_are_drawn(runs, tmp_path, args):
    assert main([str(runs["moons"]), *args, "--out-dir", str(tmp_path / "new" / "dir")]) == 0
    assert len(list((tmp_path / "new" / "dir").glob("*.png"))) == 1
