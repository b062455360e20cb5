"""Raw data sources: seeded generators, the bundled digits, and .npz/.csv files.

Everything here returns raw arrays (X float64, y as generated or stored); splitting,
label encoding and standardization live in ``core.data``. scikit-learn and pandas are
imported where they are used, so importing this module costs only NumPy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.config import ConfigError, check_choice, check_range

# Names accepted by generate(); "quantiles" and "regression" are reachable from
# scripts/make_dataset.py (and through data=file) but are not DataConfig options.
GENERATED = ("moons", "circles", "blobs", "spirals", "xor", "quantiles", "regression")
REGRESSION_SETS = ("regression",)
FILE_EXTENSIONS = (".npz", ".csv")
DIGITS_IMAGE_SHAPE = (8, 8)


def feature_names(n_features: int) -> list[str]:
    return [f"x{j}" for j in range(n_features)]


USES_N_FEATURES = ("blobs", "quantiles")  # the others are 2-D, regression 1-D
USES_N_CLASSES = ("blobs", "spirals", "quantiles")
COPIES = 3  # peak float64 copies of X while generating and writing (sklearn concatenates)


def check_size(
    name: str,
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    fields: tuple[str, str, str] = ("data.n_samples", "data.n_features", "data.n_classes"),
) -> None:
    """Refuse a generated set that cannot be made, before allocating it: more classes than
    samples, or an X larger than this machine's memory. ``fields`` name the three sizes as
    the user gave them: DataConfig's by default (generate() checks with those, as
    core.data.load_dataset calls it), scripts/make_dataset.py passes its flags."""
    n_name, d_name, k_name = fields
    if name in USES_N_CLASSES and n_classes > n_samples:
        raise ConfigError(
            f"{k_name}: {n_classes} classes for {n_samples} samples; allowed: {k_name} <= {n_name}"
        )
    d = n_features if name in USES_N_FEATURES else 1 if name == "regression" else 2
    need, have = COPIES * 8 * n_samples * d, memory_bytes()
    if have is not None and need > have:
        size = f"{n_name} x {d_name}" if name in USES_N_FEATURES else n_name
        shape = f"{n_samples} x {d}" if name in USES_N_FEATURES else f"{n_samples} samples"
        raise ConfigError(
            f"{size}: {shape} would take about {need / 2**30:.1f} GB to generate; this machine "
            f"has {have / 2**30:.1f} GB"
        )


def memory_bytes() -> int | None:
    """This machine's memory (a lower cgroup limit wins), or None when unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def generate(
    name: str, *, n_samples: int, noise: float, n_classes: int, n_features: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw (X, y) of a generated set; the same arguments give bit-identical arrays.

    X is (n_samples, d) float64. y is (n_samples,) int64 class labels, or float64 targets
    for "regression". ``noise`` is the std of Gaussian noise: on the points for moons,
    circles, xor and quantiles (labels come from the clean points), the cluster std for
    blobs, on the arm angle (radians) for spirals, on the target for regression.
    ``n_classes`` is used by blobs, spirals and quantiles (the others have 2 classes);
    ``n_features`` by blobs and quantiles (the others are 2-D, regression is 1-D).
    """
    check_choice("name", name, GENERATED)
    check_range("n_samples", n_samples, low=1)
    check_range("noise", noise, low=0.0)
    check_range("n_classes", n_classes, low=2)
    check_range("n_features", n_features, low=1)
    check_range("seed", seed, low=0, high=2**32 - 1)
    check_size(name, n_samples, n_features, n_classes)
    if name in ("spirals", "xor", "regression"):
        rng = np.random.default_rng(seed)
        if name == "spirals":
            X, y = spirals(n_samples, n_classes, noise, rng)
        elif name == "xor":
            X, y = xor(n_samples, noise, rng)
        else:
            X, y = regression_curve(n_samples, noise, rng)
        return X, y

    import sklearn.datasets as skd

    if name == "moons":
        X, y = skd.make_moons(n_samples, noise=noise, random_state=seed)
    elif name == "circles":
        X, y = skd.make_circles(n_samples, noise=noise, factor=0.5, random_state=seed)
    elif name == "blobs":
        X, y = skd.make_blobs(
            n_samples, n_features, centers=n_classes, cluster_std=noise,
            center_box=(-2.0, 2.0), random_state=seed,
        )
    else:  # quantiles: classes are shells of equal probability around the origin
        X, y = skd.make_gaussian_quantiles(
            n_samples=n_samples, n_features=n_features, n_classes=n_classes,
            random_state=seed,
        )
        X = X + noise * np.random.default_rng(seed).standard_normal(X.shape)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


SPIRAL_TURNS = 1.0  # each arm winds this many turns from the centre (radius 0) to radius 1


def spirals(
    n_samples: int, n_classes: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n_classes interleaved arms; arm k at radius r has angle 2*pi*(k/K + TURNS*r) + noise."""
    y = np.arange(n_samples, dtype=np.int64) % n_classes  # arm sizes differ by at most 1
    r = rng.uniform(0.05, 1.0, n_samples)
    theta = 2 * np.pi * (y / n_classes + SPIRAL_TURNS * r)
    theta = theta + noise * rng.standard_normal(n_samples)
    X = np.column_stack([r * np.cos(theta), r * np.sin(theta)])  # (n, 2)
    return X, y


def xor(n_samples: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform in [-1, 1]^2; class 1 where the signs of x0 and x1 differ."""
    X = rng.uniform(-1.0, 1.0, (n_samples, 2))
    y = (X[:, 0] * X[:, 1] < 0).astype(np.int64)
    return X + noise * rng.standard_normal(X.shape), y


def regression_curve(
    n_samples: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """y = x sin(x) + noise on x uniform in [-2 pi, 2 pi]; X is (n, 1), y is (n,)."""
    X = rng.uniform(-2 * np.pi, 2 * np.pi, (n_samples, 1))
    y = X[:, 0] * np.sin(X[:, 0]) + noise * rng.standard_normal(n_samples)
    return X, y


def digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled 8x8 digits: X (1797, 64) pixel values 0..16, y 0..9.

    Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixel
    columns, then the label) without importing scikit-learn, whose import costs ~1.2 s in
    every process (each search worker) against ~25 ms for the file itself.
    tests/test_data.py checks it against ``sklearn.datasets.load_digits``."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.name: digits needs scikit-learn installed (pip install scikit-learn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    names = [f"pixel_{row}_{col}" for row in range(8) for col in range(8)]
    return data[:, :-1].copy(), data[:, -1].astype(np.int64), names


# ----------------------------------------------------------------------------- files


# The one reader of data files: check_file, then load_npz or load_csv. read_file builds a
# training set on them (data.path); core.predict.read_features the samples to predict.


def check_file(path: str | Path, field: str) -> tuple[Path, str]:
    """(path, lower-case extension) of an existing .npz or .csv file, else ConfigError naming
    ``field``."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in FILE_EXTENSIONS:
        raise ConfigError(
            f"{field}: unsupported extension {p.suffix or '(none)'!r} in {str(path)!r}; "
            f"allowed: {', '.join(FILE_EXTENSIONS)}"
        )
    if not p.is_file():
        raise ConfigError(f"{field}: no such file {str(path)!r}")
    return p, ext


def load_npz(p: Path, field: str, required: tuple[str, ...] = ("X",)) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles); ConfigError naming ``field`` when it cannot
    be read or lacks one of ``required``."""
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # noqa: BLE001 - a damaged npz raises BadZipFile, ValueError, TokenError...
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(
            f"{field}: {p.name} is not a readable .npz file ({type(e).__name__}: {msg})"
        ) from None
    for key in required:
        if key not in arrays:
            raise ConfigError(
                f"{field}: {p.name} has no array {key!r}; arrays: {', '.join(arrays) or 'none'}"
            )
    return arrays


def load_csv(p: Path, field: str):
    """A csv file with a header as a pandas DataFrame (column names as text); ConfigError
    naming ``field`` when it cannot be parsed."""
    import pandas as pd

    try:
        df = pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 - ParserError, EmptyDataError, UnicodeDecodeError...
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(
            f"{field}: {p.name} is not a readable csv file ({type(e).__name__}: {msg})"
        ) from None
    df.columns = [str(c) for c in df.columns]
    return df


def read_file(path: str, *, label: str = "label") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read raw (X, y, feature_names) from an .npz (arrays X, y) or a .csv with a header.

    X is (n, d) float64 with finite values. y is (n,) or (n, k) as stored: numbers, or
    strings for csv text labels. Every problem raises ConfigError with one line that starts
    with the field to fix (data.path or data.label).
    """
    p, ext = check_file(path, "data.path")
    X, y, names = _read_npz(p) if ext == ".npz" else _read_csv(p, label)
    if len(X) == 0:
        raise ConfigError(f"data.path: {p.name} has no rows")
    return X, y, names


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    arrays = load_npz(p, "data.path", required=("X", "y"))
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2:
        raise ConfigError(
            f"data.path: {p.name} has X with shape {X.shape}; "
            "expected 2-D (n_samples, n_features)"
        )
    if X.shape[1] == 0:
        raise ConfigError(f"data.path: {p.name} has X with shape {X.shape}: no feature columns")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ConfigError(f"data.path: {p.name} has X of dtype {X.dtype}; expected numbers")
    if y.ndim not in (1, 2):
        raise ConfigError(
            f"data.path: {p.name} has y with shape {y.shape}; expected (n_samples,) or "
            "(n_samples, n_targets)"
        )
    if len(X) != len(y):
        raise ConfigError(f"data.path: X has {len(X)} rows but y has {len(y)} in {p.name}")
    X = X.astype(np.float64)
    names = feature_names(X.shape[1])
    if "feature_names" in arrays and arrays["feature_names"].shape == (X.shape[1],):
        names = [str(s) for s in arrays["feature_names"]]
    bad = [names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))]
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        bad.append("y")
    if bad:
        raise ConfigError(f"data.path: {p.name} has NaN or inf in columns {', '.join(bad)}")
    return X, y, names


def _read_csv(p: Path, label: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import pandas as pd

    df = load_csv(p, "data.path")
    columns = list(df.columns)
    if len(df) == 0:
        raise ConfigError(f"data.path: {p.name} has no rows (only a header: {', '.join(columns)})")
    if label not in columns:
        raise ConfigError(
            f"data.label: column {label!r} not in {p.name}; columns: {', '.join(columns)}"
        )
    names = [c for c in columns if c != label]
    if not names:
        raise ConfigError(f"data.path: {p.name} has no feature columns besides {label!r}")
    text = [c for c in names if not pd.api.types.is_numeric_dtype(df[c])]
    if text:
        example = df[text[0]].dropna()
        eg = f" (e.g. {example.iloc[0]!r})" if len(example) else ""
        raise ConfigError(
            f"data.path: {p.name} has non-numeric feature columns {', '.join(text)}{eg}; "
            "encode them as numbers"
        )
    nan = [c for c in columns if df[c].isna().any()]
    if nan:
        raise ConfigError(f"data.path: {p.name} has NaN in columns {', '.join(nan)}")
    X = df[names].to_numpy(dtype=np.float64)
    inf = [names[j] for j in np.flatnonzero(~np.isfinite(X).all(axis=0))]
    if inf:
        raise ConfigError(f"data.path: {p.name} has inf in columns {', '.join(inf)}")
    col = df[label]
    if pd.api.types.is_float_dtype(col) and not np.isfinite(col.to_numpy()).all():
        raise ConfigError(f"data.path: {p.name} has inf in columns {label}")
    y = col.to_numpy() if pd.api.types.is_numeric_dtype(col) else col.astype(str).to_numpy()
    if y.dtype == object:
        y = y.astype(str)
    return X, y, names


def write_file(
    path: str | Path, X: np.ndarray, y: np.ndarray, *, label: str = "label", field: str = "path"
) -> Path:
    """Write X, y as .npz (arrays X, y) or .csv (columns x0..x{d-1} and ``label``); errors
    name ``field``."""
    p = Path(path)
    ext = p.suffix.lower()
    check_choice(f"{field} extension", ext, FILE_EXTENSIONS)
    p.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".npz":
        np.savez(p, X=X, y=y)
        return p
    import pandas as pd

    if y.ndim == 2 and y.shape[1] != 1:
        raise ConfigError(
            f"{field}: a csv holds one label column; y has shape {y.shape}; use .npz"
        )
    df = pd.DataFrame(X, columns=feature_names(X.shape[1]))
    df[label] = y.reshape(len(y))
    df.to_csv(p, index=False)  # floats are written with repr(), so they read back exactly
    return p
