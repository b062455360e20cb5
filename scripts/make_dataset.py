"""Write a generated data set to .npz or .csv, for data=file runs or for other tools.

    python scripts/make_dataset.py spirals --n 1000 --noise 0.2 --classes 3 --seed 0 \
        --out data/spirals.npz

The extension of --out picks the format: .npz holds arrays X and y; .csv has a header
x0..x{d-1},label. Read it back with data=file data.path=<out>.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "core" / "__init__.py").is_file() and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python scripts/make_dataset.py` from a checkout

from app.terminal import OneLineParser
from core.config import ConfigError, check_range
from core.datasets import FILE_EXTENSIONS, GENERATED, check_size, generate, write_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prefix="make_dataset: ",
        description="Generate a data set and write it to .npz or .csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("name", choices=GENERATED, help="generator")
    parser.add_argument("--n", type=int, default=2000, help="number of samples")
    parser.add_argument("--noise", type=float, default=0.2, help="noise std (see generate())")
    parser.add_argument("--classes", type=int, default=3, help="blobs, spirals, quantiles")
    parser.add_argument("--features", type=int, default=2, help="blobs, quantiles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output file: " + " or ".join(FILE_EXTENSIONS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_range("--n", args.n, low=1)
        check_range("--noise", args.noise, low=0.0)
        check_range("--classes", args.classes, low=2)
        check_range("--features", args.features, low=1)
        check_range("--seed", args.seed, low=0, high=2**32 - 1)
        check_size(args.name, args.n, args.features, args.classes,
                   fields=("--n", "--features", "--classes"))
        if Path(args.out).suffix.lower() not in FILE_EXTENSIONS:
            raise ConfigError(
                f"--out: unsupported extension in {args.out!r}; allowed: "
                + ", ".join(FILE_EXTENSIONS)
            )
        X, y = generate(
            args.name, n_samples=args.n, noise=args.noise, n_classes=args.classes,
            n_features=args.features, seed=args.seed,
        )
        out = write_file(args.out, X, y, field="--out")
    except (ConfigError, OSError) as e:
        print(f"make_dataset: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: X {X.shape} {X.dtype}, y {y.shape} {y.dtype}")
    if y.dtype.kind == "f":
        print(f"  regression target in [{y.min():.3g}, {y.max():.3g}]")
    else:
        labels, counts = _counts(y)
        print(f"  {len(labels)} classes {labels}, counts {counts}")
    return 0


def _counts(y) -> tuple[list[int], list[int]]:
    import numpy as np

    labels, counts = np.unique(y, return_counts=True)
    return labels.tolist(), counts.tolist()


if __name__ == "__main__":
    sys.exit(main())
