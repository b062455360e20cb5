from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config import ConfigError, DataConfig
from core.data import load_dataset, read_file, split_indices
from core.datasets import SPIRAL_TURNS, generate
from tests.helpers import load_script

BUILTIN = ["digits", "moons", "circles", "blobs", "spirals", "xor"]
make_dataset = load_script("make_dataset")


def small(name: str, **kw) -> DataConfig:
    return DataConfig(name=name, n_samples=kw.pop("n_samples", 300), **kw)


def all_splits(ds):
    return (ds.train, ds.val, ds.test)


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("fractions", [(0.15, 0.15), (0.1, 0.3), (0.33, 0.17)])
def test_stratified_split_keeps_class_proportions(name, fractions):
    vf, tf = fractions
    cfg = small(name, n_samples=403, n_classes=4, val_fraction=vf, test_fraction=tf)
    ds = load_dataset(cfg)
    y_all = np.concatenate([s.y for s in all_splits(ds)])
    n_c = np.bincount(y_all, minlength=ds.n_outputs)
    for split, f in zip(all_splits(ds), (1 - vf - tf, vf, tf)):
        counts = np.bincount(split.y, minlength=ds.n_outputs)
        assert np.all(np.abs(counts - f * n_c) <= 1.0), (counts, f * n_c)
        assert abs(len(split.y) - f * len(y_all)) <= 1.5  # sizes stay on target too


@pytest.mark.parametrize("sizes", [[1, 2, 50], [5, 5, 5, 5], [97]])
def test_split_indices_partition_and_tiny_classes(sizes):
    strata = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    parts = split_indices(len(strata), (0.7, 0.15, 0.15), rng, strata=strata)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(len(strata)))  # disjoint and complete
    for part, f in zip(parts, (0.7, 0.15, 0.15)):
        counts = np.bincount(strata[part], minlength=len(sizes))
        assert np.all(np.abs(counts - f * np.array(sizes)) < 1.0)


def test_empty_split_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: .*val split empty"):
        load_dataset(DataConfig(name="moons", n_samples=8, val_fraction=0.01))


# ------------------------------------------------------------------ standardization


@pytest.mark.parametrize("name", ["digits", "blobs", "circles"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standardization_uses_train_stats_only(name, dtype):
    cfg = small(name, n_features=5, seed=3)
    ds = load_dataset(cfg, dtype)
    raw = load_dataset(small(name, n_features=5, seed=3, standardize=False), "float64")
    np.testing.assert_array_equal(raw.mean, 0.0)
    np.testing.assert_array_equal(raw.std, 1.0)
    mean = raw.train.X.mean(axis=0)
    std = raw.train.X.std(axis=0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.std, std, rtol=1e-12)
    assert ds.mean.dtype == ds.std.dtype == np.float64
    # train is centred and scaled; constant features (digits' blank pixels) stay 0
    tol = 1e-5 if dtype == "float32" else 1e-10
    train = ds.train.X.astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=tol)
    varying = raw.train.X.std(axis=0) > 0
    np.testing.assert_allclose(train.std(axis=0)[varying], 1.0, atol=tol)
    np.testing.assert_array_equal(train[:, ~varying], 0.0)
    # val/test use the train statistics, not their own
    for split, raw_split in ((ds.val, raw.val), (ds.test, raw.test)):
        assert split.X.dtype == np.dtype(dtype)
        expected = ((raw_split.X - mean) / std).astype(dtype)
        np.testing.assert_allclose(split.X, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ds.transform(raw_split.X), expected)
    assert not np.allclose(ds.val.X.mean(axis=0), 0.0, atol=1e-9)


def test_transform_rejects_wrong_width():
    ds = load_dataset(small("moons"))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ds.transform(np.zeros((3, 5)))


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", BUILTIN)
def test_same_config_gives_bit_identical_arrays(name):
    a, b = load_dataset(small(name, seed=7)), load_dataset(small(name, seed=7))
    for sa, sb in zip(all_splits(a), all_splits(b)):
        assert sa.X.tobytes() == sb.X.tobytes() and sa.y.tobytes() == sb.y.tobytes()
    assert a.mean.tobytes() == b.mean.tobytes() and a.std.tobytes() == b.std.tobytes()
    c = load_dataset(small(name, seed=8))
    assert not np.array_equal(a.train.X, c.train.X)  # the seed matters (split and/or data)


# ------------------------------------------------------------------ individual sets


def test_digits_shapes():
    ds = load_dataset(DataConfig(name="digits"))
    assert sum(len(s.y) for s in all_splits(ds)) == 1797
    assert ds.n_features == 64 and ds.train.X.shape[1] == 64
    assert ds.n_outputs == 10 and ds.task == "classification"
    np.testing.assert_array_equal(ds.classes, np.arange(10))
    assert ds.image_shape == (8, 8) and len(ds.feature_names) == 64
    assert ds.train.y.dtype == np.int64 and ds.train.X.dtype == np.float32


def test_digits_equal_scikit_learns():
    """core.datasets.digits reads scikit-learn's file without importing scikit-learn: the same
    samples, labels and feature names as its own loader."""
    from sklearn.datasets import load_digits

    from core.datasets import digits

    X, y, names = digits()
    bunch = load_digits()
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)
    assert X.dtype == np.float64 and y.dtype == np.int64
    assert names == list(bunch.feature_names)


@pytest.mark.parametrize("n_samples,n_classes", [(300, 3), (301, 5), (64, 2)])
def test_spirals_arms(n_samples, n_classes):
    X, y = generate("spirals", n_samples=n_samples, noise=0.0, n_classes=n_classes,
                    n_features=2, seed=1)
    assert X.shape == (n_samples, 2) and y.dtype == np.int64
    counts = np.bincount(y)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1
    # noise-free: the arm follows from radius and angle
    r = np.hypot(X[:, 0], X[:, 1])
    phase = np.arctan2(X[:, 1], X[:, 0]) / (2 * np.pi) - SPIRAL_TURNS * r
    arm = np.round(phase * n_classes) % n_classes
    np.testing.assert_array_equal(arm, y)
    np.testing.assert_allclose(phase * n_classes - np.round(phase * n_classes), 0, atol=1e-9)


def test_xor_labels_follow_the_sign_rule():
    X, y = generate("xor", n_samples=500, noise=0.0, n_classes=2, n_features=2, seed=0)
    np.testing.assert_array_equal(y, (np.sign(X[:, 0] * X[:, 1]) < 0).astype(np.int64))
    assert 200 < y.sum() < 300  # both classes, roughly balanced
    Xn, yn = generate("xor", n_samples=500, noise=0.3, n_classes=2, n_features=2, seed=0)
    np.testing.assert_array_equal(yn, y)  # labels come from the clean points
    assert 0.2 < np.std(Xn - X) < 0.4


@pytest.mark.parametrize("name,n_classes,n_features,expected_classes,expected_d", [
    ("moons", 3, 5, 2, 2), ("circles", 3, 5, 2, 2), ("blobs", 4, 5, 4, 5),
    ("quantiles", 4, 3, 4, 3),
])
def test_generated_shapes(name, n_classes, n_features, expected_classes, expected_d):
    X, y = generate(name, n_samples=120, noise=0.1, n_classes=n_classes,
                    n_features=n_features, seed=0)
    assert X.shape == (120, expected_d) and X.dtype == np.float64
    assert len(np.unique(y)) == expected_classes and y.dtype == np.int64


def test_regression_curve_and_task_rules():
    X, y = generate("regression", n_samples=200, noise=0.0, n_classes=2, n_features=1, seed=0)
    np.testing.assert_allclose(y, X[:, 0] * np.sin(X[:, 0]))
    assert y.dtype == np.float64
    with pytest.raises(ConfigError, match=r"^data\.task: "):
        load_dataset(DataConfig(name="moons", task="regression"))


# ------------------------------------------------------------------ files


@pytest.mark.parametrize("ext", [".npz", ".csv"])
@pytest.mark.parametrize("name", ["spirals", "blobs", "regression"])
def test_file_round_trip_through_make_dataset(tmp_path, capsys, ext, name):
    out = tmp_path / "sub" / f"{name}{ext}"
    args = [name, "--n", "150", "--noise", "0.1", "--classes", "3", "--features", "3",
            "--seed", "4", "--out", str(out)]
    assert make_dataset.main(args) == 0
    assert "X (150, " in capsys.readouterr().out
    X, y = generate(name, n_samples=150, noise=0.1, n_classes=3, n_features=3, seed=4)

    Xr, yr, names = read_file(str(out))
    np.testing.assert_array_equal(Xr, X)
    np.testing.assert_array_equal(yr, y)
    assert names == [f"x{j}" for j in range(X.shape[1])]

    ds = load_dataset(DataConfig(name="file", path=str(out), standardize=False), "float64")
    assert ds.name == out.name
    assert ds.task == ("regression" if name == "regression" else "classification")
    X_back = np.concatenate([s.X for s in all_splits(ds)])
    y_back = np.concatenate([s.y for s in all_splits(ds)])
    if ds.task == "classification":
        y_back = ds.classes[y_back]
        assert ds.n_outputs == 3
    else:
        assert y_back.shape == (150, 1) and ds.n_outputs == 1
        y_back = y_back[:, 0]
    order = np.lexsort(X_back.T[::-1])
    ref = np.lexsort(X.T[::-1])
    np.testing.assert_array_equal(X_back[order], X[ref])  # the same rows, split and shuffled
    np.testing.assert_array_equal(y_back[order], y[ref])


def test_csv_text_labels_and_auto_task(tmp_path):
    path = tmp_path / "pets.csv"
    rows = ["a,b,kind"] + [f"{i},{i % 7 * 0.5},{['cat', 'dog', 'eel'][i % 3]}"
                           for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(DataConfig(name="file", path=str(path), label="kind"))
    assert ds.task == "classification" and ds.feature_names == ["a", "b"]
    np.testing.assert_array_equal(ds.classes, ["cat", "dog", "eel"])
    a = ds.train.X[:, 0] * ds.std[0] + ds.mean[0]  # undo standardization: a == row index
    np.testing.assert_array_equal(ds.classes[ds.train.y], np.array(["cat", "dog", "eel"])[
        np.round(a).astype(int) % 3])
    # a fractional float target is regression; whole-number floats are classes
    np.savez(tmp_path / "reg.npz", X=np.ones((20, 2)) * np.arange(20)[:, None],
             y=np.linspace(0, 1, 20))
    assert load_dataset(DataConfig(name="file", path=str(tmp_path / "reg.npz"))).task == (
        "regression")
    np.savez(tmp_path / "cls.npz", X=np.arange(40.0).reshape(20, 2), y=np.arange(20.0) % 2)
    ds = load_dataset(DataConfig(name="file", path=str(tmp_path / "cls.npz")))
    assert ds.task == "classification" and ds.classes.dtype == np.int64


def _write(tmp_path: Path, name: str, content) -> Path:
    p = tmp_path / name
    if content == "damaged":  # a compressed npz with a zeroed stretch in its first member
        np.savez_compressed(p, X=np.random.default_rng(0).random((200, 3)), y=np.zeros(200))
        data = bytearray(p.read_bytes())
        data[200:260] = bytes(60)
        p.write_bytes(bytes(data))
    elif isinstance(content, dict):
        np.savez(p, **content)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


BAD_FILES = [
    ("missing.csv", None, {}, r"^data\.path: no such file '.*missing\.csv'$"),
    ("x.txt", "a,label\n1,0\n", {}, r"^data\.path: unsupported extension '\.txt'.*\.npz, \.csv$"),
    ("x.csv", "a,b,c\n1,2,3\n4,5,6\n", {},
     r"^data\.label: column 'label' not in x\.csv; columns: a, b, c$"),
    ("x.csv", "a,b,label\n1,,0\n4,5,1\n,1,0\n", {},
     r"^data\.path: x\.csv has NaN in columns a, b$"),
    ("x.csv", "a,b,label\n1,red,0\n4,blue,1\n", {},
     r"^data\.path: x\.csv has non-numeric feature columns b \(e\.g\. 'red'\)"),
    ("x.csv", "", {}, r"^data\.path: x\.csv is not a readable csv file"),
    ("x.csv", "label\n0\n1\n", {}, r"^data\.path: x\.csv has no feature columns"),
    ("x.npz", {"X": np.arange(10.0), "y": np.arange(10)}, {},
     r"^data\.path: x\.npz has X with shape \(10,\); expected 2-D \(n_samples, n_features\)$"),
    ("x.npz", {"X": np.zeros((10, 2)), "y": np.zeros(9)}, {},
     r"^data\.path: X has 10 rows but y has 9"),
    ("x.npz", {"X": np.zeros((10, 2))}, {}, r"^data\.path: x\.npz has no array 'y'; arrays: X$"),
    ("x.npz", b"this is not a zip file", {}, r"^data\.path: x\.npz is not a readable \.npz"),
    ("x.npz", "damaged", {}, r"^data\.path: x\.npz is not a readable \.npz"),
    ("x.npz", {"X": np.array([[1, "a"]], dtype=object), "y": np.zeros(1)}, {},
     r"^data\.path: x\.npz is not a readable \.npz file \(ValueError: Object arrays"),
    ("x.csv", b"\xff\xfe\x00a,label\n\x80,1\n", {}, r"^data\.path: x\.csv is not a readable csv"),
    ("x.csv", "a,label\n1,0\n2,0,5,6\n", {}, r"^data\.path: x\.csv is not a readable csv"),
    ("x.npz", {"X": np.array([[1.0, np.nan]] * 4), "y": np.zeros(4)}, {},
     r"^data\.path: x\.npz has NaN or inf in columns x1$"),
    ("x.npz", {"X": np.zeros((10, 2)), "y": np.zeros(10)}, {},
     r"^data\.task: x\.npz has a single class"),
    ("x.npz", {"X": np.zeros((10, 2)), "y": np.linspace(0, 1, 10)}, {"task": "classification"},
     r"^data\.task: classification needs integer or text labels"),
    ("x.csv", "a,label\n1,cat\n2,dog\n", {"task": "regression"},
     r"^data\.task: regression needs a numeric target"),
    # a header and no rows used to be reported as "non-numeric feature columns"
    ("x.csv", "a,b,label\n", {},
     r"^data\.path: x\.csv has no rows \(only a header: a, b, label\)$"),
    # inf in the label column used to train a regression on it (NaN loss, "diverged")
    ("x.csv", "a,label\n1,inf\n2,1.5\n3,0.5\n", {},
     r"^data\.path: x\.csv has inf in columns label$"),
    ("x.csv", "a,label\n1,-inf\n2,1\n3,0\n", {}, r"^data\.path: x\.csv has inf in columns label$"),
    ("x.csv", "a,label\n1,2\n2,1e999\n", {"task": "regression"}, r"has inf in columns label$"),
    ("x.npz", {"X": np.zeros((10, 0)), "y": np.arange(10) % 2}, {},
     r"^data\.path: x\.npz has X with shape \(10, 0\): no feature columns$"),
    ("x.npz", {"X": np.zeros((0, 2)), "y": np.zeros(0)}, {}, r"^data\.path: x\.npz has no rows$"),
]


@pytest.mark.parametrize("name,content,extra,pattern", BAD_FILES)
def test_bad_files_give_one_line_config_errors(tmp_path, name, content, extra, pattern):
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_dataset(DataConfig(name="file", path=str(path), **extra))
    assert "\n" not in str(info.value)


def test_make_dataset_reports_bad_arguments(tmp_path, capsys):
    assert make_dataset.main(["xor", "--out", str(tmp_path / "x.txt")]) == 2
    assert "--out: unsupported extension" in capsys.readouterr().err
    assert make_dataset.main(["xor", "--n", "0", "--out", str(tmp_path / "x.npz")]) == 2
    assert "--n: 0 is out of range" in capsys.readouterr().err


# ------------------------------------------------------------------ sizes refused up front

TERA = 10**12  # samples: terabytes of X on any machine


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["blobs", "--n", "1000000", "--features", str(10**8)],
         "make_dataset: error: --n x --features: 1000000 x 100000000 would take about "),
        (["moons", "--n", str(TERA)], f"make_dataset: error: --n: {TERA} samples would take "),
        (["quantiles", "--n", "10", "--features", str(TERA)], "make_dataset: error: --n x --"),
        (["blobs", "--n", "50", "--classes", "100"],
         "make_dataset: error: --classes: 100 classes for 50 samples; allowed: --classes <= "),
        (["spirals", "--n", "5", "--classes", "6"], "make_dataset: error: --classes: 6 classes"),
        (["blobs", "--noise", "inf"], "make_dataset: error: --noise: inf is not a finite number"),
        (["blobs", "--n", "abc"], "make_dataset: error: --n: invalid int value: 'abc'\n"),
    ],
)
def test_make_dataset_refuses_sizes_before_allocating(tmp_path, capsys, args, expected):
    out = tmp_path / "x.npz"
    try:
        code = make_dataset.main([*args, "--out", str(out)])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not out.exists()


def test_the_issue_example_is_refused_when_it_does_not_fit(tmp_path, capsys):
    from core.datasets import memory_bytes

    need = 3 * 8 * 100_000 * 100_000  # X float64, about three copies while generating
    if memory_bytes() is None or memory_bytes() >= need:
        pytest.skip("this machine could generate it")
    args = ["blobs", "--features", "100000", "--n", "100000", "--out", str(tmp_path / "x.npz")]
    assert make_dataset.main(args) == 2
    err = capsys.readouterr().err  # 2.4e11 bytes = 223.5 GiB
    assert "--n x --features: 100000 x 100000 would take about 223.5 GB to generate" in err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "moons", "n_samples": TERA}, rf"^data\.n_samples: {TERA} samples would take "),
        ({"name": "blobs", "n_features": TERA}, r"^data\.n_samples x data\.n_features: 2000 x "),
        ({"name": "blobs", "n_classes": 2001}, r"^data\.n_classes: 2001 classes for 2000 samples"),
        ({"name": "spirals", "n_samples": 8, "n_classes": 9}, r"^data\.n_classes: 9 classes "),
    ],
)
def test_generated_set_too_large_is_a_config_error(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_dataset(DataConfig(**overrides))


def test_classes_equal_to_samples_is_fine(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert make_dataset.main(["spirals", "--n", "3", "--classes", "3", "--out", str(out)]) == 0
    assert np.load(out)["y"].tolist() == [0, 1, 2]
