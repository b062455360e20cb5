"""Optuna search over nnsweep experiments.

    python search.py --trials 200                       # the default space on digits
    python search.py --trials 50 --space quick data=moons engine=cpu
    python search.py --trials 300 --study big --jobs 2  # resume `big` up to 300 trials, 2 workers

Trailing arguments are Hydra overrides applied to every trial. Results land in
outputs/studies/<study>/: journal.log (the storage), trials/<n>/, trials.csv, epochs.csv,
plots/*.png, best/ and summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from app.terminal import OneLineParser
from core.config import SEED_MAX, ConfigError, check_range
from sweeper.settings import (
    AUTO_CV_MAX_SAMPLES,
    AUTO_FINALISTS,
    AUTO_FOLDS,
    MAX_FINALISTS,
    PRUNERS,
    SAMPLERS,
)

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a folder name under --out
JOBS_PER_CORE = 4  # more worker processes than this only thrash (each trains and imports numba)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(
        description="Optuna hyperparameter search for nnsweep networks.",
        epilog="Anything after the flags is a Hydra override for every trial, e.g. data=moons.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--trials", type=int, default=20, help="target total of finished trials in the study")
    p.add_argument("--study", default=None,
                   help="study name (default: the space name): letters, digits, '_', '-', '.'")
    p.add_argument("--storage", default=None,  # not the env value: --help would print a password
                   help="Optuna storage URL (sqlite:///x.db, postgresql://...) or a journal file; "
                        "default: $NNSWEEP_STORAGE, else outputs/studies/<study>/journal.log")
    p.add_argument("--space", default="default",
                   help="conf/hparams_search/<name>.yaml (the hparams_search group run.py uses) or "
                        "a path to a YAML file with params:, layers:, overrides:")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--pruner", default="median", choices=PRUNERS)
    p.add_argument("--jobs", type=jobs_arg, default="auto",
                   help="worker processes on this machine: a number, or auto (the CPUs this "
                        "process may use)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (each worker session derives its own)")
    p.add_argument("--cv", type=cv_arg, default=None,
                   help="folds per trial: K >= 2 cross-validates train+val, 1 is the hold-out "
                        "validation split, auto (default: the space's cv, else auto): hold-out "
                        f"trials and {AUTO_FINALISTS} finalists when train+val has <= "
                        f"{AUTO_CV_MAX_SAMPLES:,} samples ({AUTO_FOLDS}-fold trials with several "
                        "objectives)")
    p.add_argument("--finalists", type=finalists_arg, default="auto",
                   help="the N best hold-out trials are trained again with --finalist-folds "
                        "folds and the pick is the best fold mean (0: none); auto: "
                        f"{AUTO_FINALISTS} under --cv auto on small data, else 0")
    p.add_argument("--finalist-folds", type=int, default=AUTO_FOLDS,
                   help="folds of each finalist, 2..20")
    p.add_argument("--metric", default=None,
                   help="objective: val_accuracy | val_loss (default: the space's), or several "
                        "with directions: val_accuracy:max,n_params:min (also train_seconds, "
                        "latency_us, latency_us_b256)")
    p.add_argument("--direction", default=None, choices=("minimize", "maximize"),
                   help="default: the space's, else maximize for accuracy and minimize for loss")
    p.add_argument("--constraint", action="append", default=None, metavar="NAME<=X",
                   help="a bound on a metric, e.g. 'n_params<=20000' (repeatable): trials beyond "
                        "it are infeasible")
    p.add_argument("--out", default="outputs/studies", help="root folder of studies")
    p.add_argument("--allow-changes", action="store_true",
                   help="resume a study although its space, metric, overrides or --cv changed")
    p.add_argument("--no-plots", action="store_true", help="skip the seaborn plots")
    p.add_argument("--list", action="store_true",
                   help="list the studies under --out (and in --storage) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=moons trainer.epochs=20")
    args = p.parse_args(argv)
    if args.storage is None:
        args.storage = os.environ.get("NNSWEEP_STORAGE")
    try:
        check_args(args)
    except ConfigError as e:
        p.error(str(e))
    return args


def check_args(args: argparse.Namespace) -> None:
    """Every flag at its edges, before anything is created: ConfigError naming the flag."""
    check_range("--trials", args.trials, low=1)
    if args.jobs == "auto":
        from sweeper.settings import available_cpus

        args.jobs = available_cpus()
    max_jobs = JOBS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= args.jobs <= max_jobs:
        raise ConfigError(f"--jobs: {args.jobs} is out of range; allowed: auto or 1 <= --jobs <= "
                          f"{max_jobs} ({JOBS_PER_CORE} per core of this machine)")
    check_range("--timeout", args.timeout, low=0.0, low_open=True, optional=True)
    check_range("--seed", args.seed, low=0, high=SEED_MAX)
    name = args.study if args.study is not None else Path(args.space).stem
    if not STUDY_NAME.fullmatch(name):
        given = "" if args.study is not None else f" (the default, from --space {args.space})"
        raise ConfigError(
            f"--study: {name!r}{given} is not a study name; allowed: 1-128 letters, digits, '_', "
            "'-', '.', starting with a letter or digit (no path: a study is a folder under --out)"
        )
    if args.metric is not None or args.constraint:
        from sweeper.objectives import parse_constraints, parse_goals

        if args.metric is not None:
            parse_goals(args.metric, "--metric", direction=args.direction)
        parse_constraints(args.constraint)
    if not args.out.strip():
        raise ConfigError("--out: empty; allowed: a folder (created if missing)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out: '{args.out}' is a file; allowed: a folder (created if missing)")


def jobs_arg(text: str) -> int | str:
    """--jobs: a whole number >= 1, or auto."""
    if text == "auto":
        return text
    try:
        return int(text)  # the range is checked in check_args, where the CPUs are known
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: auto or a whole number") from None


def auto_or_whole(low: int, high: int):
    """An argparse type: "auto", or a whole number low..high."""

    def parse(text: str) -> int | str:
        if text == "auto":
            return text
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not allowed; allowed: auto or a whole number {low}..{high:,}")
        return value

    return parse


cv_arg = auto_or_whole(1, 20)  # --cv: folds per trial
finalists_arg = auto_or_whole(0, MAX_FINALISTS)  # --finalists


def settings_from_args(args: argparse.Namespace):
    from app.compose import CONF_DIR, compose_experiment
    from sweeper.settings import StudySettings, plan_cv
    from sweeper.space import load_space

    space = load_space(args.space, CONF_DIR)
    goals, constraints = study_goals(args, space)
    metric, direction = goals[0].name, goals[0].direction
    settings = StudySettings(
        name=args.study or Path(args.space).stem,
        space=space,
        trials=args.trials,
        root=Path(args.out),
        storage=args.storage,
        jobs=args.jobs,
        timeout=args.timeout,
        seed=args.seed,
        metric=metric,
        direction=direction,
        sampler=args.sampler,
        pruner=args.pruner,
        overrides=list(args.overrides),
        allow_changes=args.allow_changes,
        goals=goals,
        constraints=constraints,
        finalist_folds=args.finalist_folds,
    )
    check_space(settings, compose_experiment)
    cv = args.cv if args.cv is not None else (space.cv if space.cv is not None else "auto")
    settings.cv, settings.finalists = plan_cv(
        cv, args.finalists, lambda: compose_experiment(space.overrides + list(args.overrides))[1],
        len(goals))
    settings.__post_init__()  # checks cv and finalists
    return settings


def study_goals(args: argparse.Namespace, space) -> tuple[tuple, tuple]:
    """(goals, constraints) from --metric/--direction/--constraint, else the space's."""
    from sweeper.objectives import Goal, parse_constraints, parse_goals

    spec = args.metric or space.metric or "val_accuracy"
    where = "--metric" if args.metric else "search.metric"
    goals = parse_goals(spec, where, direction=args.direction)
    if len(goals) == 1 and ":" not in spec and args.direction is None and space.direction:
        goals = (Goal(goals[0].name, space.direction),)  # a single metric takes the space's
    if args.constraint is not None:
        return goals, parse_constraints(args.constraint)
    return goals, parse_constraints(space.constraints, "search.constraints")


def check_space(settings, compose) -> None:
    """Compose one config per extreme of every parameter before the first trial, so a bad
    key or value fails now, naming it, instead of in every trial."""
    import optuna

    from sweeper.space import SearchSpace

    space: SearchSpace = settings.space
    for pick in (0, -1):
        fixed = {}
        for name, dist in space.params.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                fixed[name] = dist.choices[pick]
            elif isinstance(dist, optuna.distributions.BaseDistribution):
                fixed[name] = dist.low if pick == 0 else dist.high
        if space.depth is not None:
            fixed["layers.depth"] = space.depth.low if pick == 0 else space.depth.high
            for i in range(int(fixed["layers.depth"])):
                fixed[f"layers.units_{i}"] = space.units.low if pick == 0 else space.units.high
        compose(space.overrides_for(fixed) + list(settings.overrides))


def main(argv: list[str] | None = None) -> int:
    from core.config import ConfigError

    args = parse_args(argv)
    if args.list:
        from sweeper.listing import format_rows, study_rows

        try:
            print(format_rows(study_rows(Path(args.out), args.storage)))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        settings = settings_from_args(args)
        from sweeper.finalists import run_finalists
        from sweeper.report import import_plotting, write_report
        from sweeper.storage import describe_storage
        from sweeper.study import run_study

        print(f"study {settings.name!r}: {settings.trials} trials, space {settings.space.source}, "
              f"storage {describe_storage(settings.storage, settings.dir)}", file=sys.stderr)
        # this process's idle moment at the end of a phase (the others finishing their last
        # trials) imports the report's plotting (~1 s), instead of the report itself
        warm = None if args.no_plots else import_plotting
        study = run_study(settings, progress=not args.quiet, while_waiting=warm)
        run_finalists(settings, study, progress=not args.quiet, while_waiting=warm)
        summary = write_report(study, settings.dir, plots=not args.no_plots)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the study is saved; run the same command to resume", file=sys.stderr)
        return 130
    if "pareto" in summary:
        from sweeper.pareto import front_table

        how = f"{settings.cv}-fold CV mean" if settings.cv > 1 else "validation split"
        print(f"Pareto front of {settings.goals[0].name} ({how}) against "
              f"{', '.join(g.name for g in settings.goals[1:])}: {summary['n_pareto']} trials")
        print(front_table(summary))
        print(f"[{summary['final_model_size']}; each evaluated once on test, "
              f"n={_n_test(summary)}]")
    elif summary.get("best_trial") is None:
        print("no trial completed; see trials.csv for the fail reasons", file=sys.stderr)
    else:
        print(f"best trial #{summary['best_trial']}: {settings.metric} = {summary['value']:.4f} "
              f"({_how(summary)})")
        print("params: " + json.dumps(summary["params"], default=str))
        print(f"train it again: {summary['run_command']}")
        base = summary.get("baseline") or {}
        print(f"test accuracy: pick {_acc(summary)} vs baseline (no search) {_acc(base)}"
              f"  [{summary.get('final_model', 'final model')}, n={summary.get('n_test')}]")
    where = "pareto/" if "pareto" in summary else "best/"
    print(f"results: {settings.dir}/ (trials.csv, epochs.csv, plots/, {where}, summary.json)")
    return 0


def _how(summary: dict) -> str:
    """What the pick's value is: '5-fold CV mean', or that of a finalist, or 'validation split'."""
    folds = summary.get("cv_folds", 1)
    if summary.get("finalists"):
        return (f"{folds}-fold CV mean, best of {summary['finalists']} finalists; validation "
                f"split {summary['holdout_value']:.4f}")
    return f"{folds}-fold CV mean" if folds > 1 else "validation split"


def _n_test(summary: dict):
    members = summary.get("pareto") or [{}]
    return members[0].get("n_test")


def _acc(result: dict) -> str:
    """'0.9814 (95% CI 0.957-0.992)' for a test result of sweeper.final."""
    acc = result.get("test_accuracy")
    if acc is None:
        return "n/a"
    ci = result.get("test_accuracy_ci95")
    return f"{acc:.4f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


if __name__ == "__main__":
    sys.exit(main())
