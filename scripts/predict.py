"""Predict with a trained checkpoint, draw its predictions, or ensemble several checkpoints.

A checkpoint is a model.npz, a run folder holding one, or a study folder (its best/ model).
Data splits are rebuilt from the config stored in the checkpoint (deterministic).

    python scripts/predict.py RUN --x 0.5 -1.2            # one sample in raw feature units
    python scripts/predict.py RUN --index 7               # sample 7 of the test split
    python scripts/predict.py RUN --grid 8 --boundary --confusion
    python scripts/predict.py RUN --input new.csv --out preds.csv
    python scripts/predict.py --ensemble RUN1 RUN2 RUN3   # members' and ensemble's accuracy

Figures (PNG) go next to the checkpoint unless --out-dir says otherwise. Several actions can
be combined; with --ensemble every action uses the averaged probabilities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "core" / "__init__.py").is_file() and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python scripts/predict.py` from a checkout

import numpy as np  # noqa: E402

from app.terminal import OneLineParser  # noqa: E402
from core.config import ConfigError, check_choice, check_range  # noqa: E402
from core.predict import (  # noqa: E402
    Predictor,
    evaluate_scores,
    load_predictor,
    member_table,
    read_features,
    resolve_checkpoint,
)

MAX_GRID = 30  # --grid N draws N x N panels: 900 already take a minute
MAX_RESOLUTION = 2000  # --boundary scores resolution^2 mesh points (4 million)
SPLITS = ("train", "val", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prefix="predict: ",
        description="Predict with a trained nnsweep checkpoint; draw and ensemble predictions.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("checkpoint", nargs="?", help="model.npz, a run folder or a study folder")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="CKPT",
        help="average the probabilities of these checkpoints",
    )
    sample = parser.add_mutually_exclusive_group()
    sample.add_argument(
        "--x",
        nargs="+",
        type=float,
        metavar="V",
        help="one sample's features in raw units (standardized like training)",
    )
    sample.add_argument("--index", type=int, help="predict this sample of --split")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="split for --index, --grid, --boundary, --confusion (default: test)",
    )
    parser.add_argument("--grid", type=int, metavar="N", help="figure of N x N samples")
    parser.add_argument("--boundary", action="store_true", help="decision boundary (2-D data)")
    parser.add_argument("--confusion", action="store_true", help="confusion matrix heatmap")
    parser.add_argument(
        "--resolution", type=int, default=200, help="--boundary mesh points per axis"
    )
    parser.add_argument("--input", metavar="FILE", help=".csv or .npz of samples to predict")
    parser.add_argument("--label", default="label", help="label column of a csv --input")
    parser.add_argument(
        "--out", metavar="CSV", help="--input predictions (default: OUT_DIR/predictions.csv)"
    )
    parser.add_argument(
        "--out-dir", help="folder for figures and csv files (default: the checkpoint's)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except ConfigError as e:  # CheckpointError too: one line, no traceback
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Every flag at its edges, before a checkpoint is read: ConfigError naming the flag."""
    if (args.checkpoint is None) == (args.ensemble is None):
        raise ConfigError("checkpoint: give one checkpoint, or several with --ensemble (not both)")
    for value in args.x or []:
        check_range("--x", value)  # finite
    if args.grid is not None:
        check_range("--grid", args.grid, low=1, high=MAX_GRID)
    check_range("--resolution", args.resolution, low=2, high=MAX_RESOLUTION)
    for flag, path in (("--out-dir", args.out_dir), ("--out", args.out and Path(args.out).parent)):
        if path is None:
            continue
        if not str(path).strip():
            raise ConfigError(f"{flag}: empty; allowed: a path")
        file = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None)
        if file is not None and not file.is_dir():
            raise ConfigError(f"{flag}: '{file}' is a file; allowed: a path in a folder")


def get_split(ds, name: str):
    """The Split ``name`` of a Dataset (X standardized, y class index or target)."""
    check_choice("--split", name, SPLITS)
    return getattr(ds, name)


def check_index(index: int, n: int, split: str) -> None:
    if not 0 <= index < n:
        raise ConfigError(
            f"--index: {index} is out of range; allowed: 0 <= --index <= {n - 1} "
            f"(the {split} split has {n} samples)"
        )


def run(args: argparse.Namespace) -> None:
    check_args(args)
    paths = args.ensemble or [args.checkpoint]
    predictor = load_predictor(paths, field="--ensemble" if args.ensemble else "checkpoint")
    out_dir = Path(args.out_dir) if args.out_dir else resolve_checkpoint(paths[0]).parent
    prefix = "ensemble_" if args.ensemble else ""
    name = f"{len(paths)}-model ensemble" if args.ensemble else str(paths[0])
    title = f"{predictor.dataset}, {args.split} split: {name}"
    ds = None  # rebuilt only when an action needs it

    def split():
        nonlocal ds
        ds = ds or predictor.load_data()
        return get_split(ds, args.split)

    wanted = (("--grid", args.grid is not None), ("--boundary", args.boundary),
              ("--confusion", args.confusion))
    figures = [flag for flag, on in wanted if on]
    if figures and not predictor.is_classifier:
        raise ConfigError(
            f"{figures[0]}: needs a classification checkpoint; this one is regression"
        )
    if figures:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.x is not None:
        show_sample(
            predictor,
            predictor.standardize(np.array(args.x), field="--x"),
            np.array(args.x),
            None,
            f"--x ({name})",
        )
    if args.index is not None:
        s = split()
        check_index(args.index, len(s.y), args.split)
        i = args.index
        true = s.y[i] if s.y.ndim == 2 else np.array([s.y[i]])
        show_sample(
            predictor,
            s.X[i : i + 1],
            predictor.unstandardize(s.X[i : i + 1])[0],
            true,
            f"{args.split}[{i}] of {predictor.dataset} ({name})",
        )
    if args.grid is not None:
        from app.predict_figures import plot_grid

        s = split()
        path = plot_grid(
            predictor, s.X, s.y, out_dir / f"{prefix}grid_{args.split}.png", args.grid, title=title
        )
        print(f"wrote {path}")
    if args.boundary:
        from app.predict_figures import plot_boundary

        if predictor.n_features != 2:  # before rebuilding the data
            raise ConfigError(
                f"--boundary: needs 2-D data; this checkpoint has {predictor.n_features} features"
            )
        s = split()
        path = plot_boundary(
            predictor,
            s.X,
            s.y,
            out_dir / f"{prefix}boundary_{args.split}.png",
            resolution=args.resolution,
            title=title,
        )
        print(f"wrote {path}")
    if args.confusion:
        from app.predict_figures import plot_confusion

        s = split()
        path = out_dir / f"{prefix}confusion_{args.split}.png"
        M = plot_confusion(predictor, s.X, s.y, path, title=title)
        acc = evaluate_scores(predictor, predictor.scores(s.X), s.y)[1]
        print(f"wrote {path}: accuracy {acc:.4f} on {M.sum()} samples")
    if args.input is not None:
        features = read_features(args.input, predictor, label=args.label, field="--input")
        df = predictor.frame(features.X, true=features.y, field="--input")
        out = Path(args.out) if args.out else out_dir / f"{prefix}predictions.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        print(f"wrote {out}: {len(df)} rows")
        print(df.head(10).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.ensemble:
        s = get_split(predictor.load_data() if ds is None else ds, "test")
        table = member_table(predictor, s.X, s.y)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / "ensemble.csv", index=False)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"wrote {out_dir / 'ensemble.csv'}")
    nothing = args.x is None and args.index is None and args.grid is None
    if nothing and not (args.boundary or args.confusion or args.input or args.ensemble):
        summarize(predictor, split(), args.split, name)


def show_sample(
    predictor: Predictor, x_std: np.ndarray, x_raw: np.ndarray, true: np.ndarray | None, what: str
) -> None:
    """Print one sample's prediction: class and probability per class, or the value."""
    S = predictor.scores(x_std.reshape(1, -1))[0]  # (k,)
    print(what)
    shown = ", ".join(f"{n}={v:.4g}" for n, v in zip(predictor.feature_names, x_raw, strict=True))
    print(f"  input (raw units): {shown if len(x_raw) <= 8 else f'{len(x_raw)} values'}")
    if not predictor.is_classifier:
        values = ", ".join(f"{v:.6g}" for v in S)
        truth = "" if true is None else "   true " + ", ".join(f"{v:.6g}" for v in true)
        print(f"  predicted value: {values}{truth}")
        return
    labels = predictor.labels
    best = int(np.argmax(S))
    truth = "" if true is None else f"   true {labels[int(true[0])]}"
    print(f"  predicted class: {labels[best]}{truth}")
    word = "score" if predictor.members[0].spec.loss == "mse" else "probability"
    for label, p in zip(labels, S, strict=True):
        mark = "  <-" if label == labels[best] else ""
        print(f"    {label:>8}  {word} {p:.4f}{mark}")


def summarize(predictor: Predictor, s, split: str, name: str) -> None:
    metric = "accuracy" if predictor.is_classifier else "mse"
    loss, acc = evaluate_scores(predictor, predictor.scores(s.X), s.y)
    value = acc if predictor.is_classifier else loss  # a regression's loss is its mse
    classes = f"{len(predictor.labels)} classes" if predictor.is_classifier else "regression"
    print(f"{name}: {predictor.dataset}, {classes}, {predictor.n_features} features")
    print(f"  {split} {metric} {value:.4f} on {len(s.y)} samples")


if __name__ == "__main__":
    sys.exit(main())
