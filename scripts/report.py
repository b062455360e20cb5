"""Rebuild a study's tables, plots and best-model evaluation from its storage.

    python scripts/report.py --study default
    python scripts/report.py --study big --storage "$NNSWEEP_STORAGE"   # any Optuna URL
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="Optuna storage URL; default: the study's journal file")
    p.add_argument("--out", default="outputs/studies", help="root folder of studies")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)

    import optuna

    from core.config import ConfigError
    from sweeper.report import write_report
    from sweeper.storage import open_storage

    study_dir = Path(args.out) / args.study
    try:
        if args.storage is None and not (study_dir / "journal.log").exists():
            raise ConfigError(f"--study: no journal at {study_dir / 'journal.log'}; pass --storage URL")
        storage = open_storage(args.storage, study_dir)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if args.study not in names:
            raise ConfigError(f"--study: no study {args.study!r} in this storage; available: {', '.join(names) or 'none'}")
        study = optuna.load_study(study_name=args.study, storage=storage)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = write_report(study, study_dir, plots=not args.no_plots)
    print(f"{len(study.trials)} trials -> {study_dir}/trials.csv, epochs.csv, summary.json"
          + ("" if args.no_plots else ", plots/"))
    if summary.get("best_trial") is not None:
        print(f"best trial #{summary['best_trial']}: {summary['value']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
