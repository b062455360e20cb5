"""Train networks as configured in conf/: one run, or a multirun of several (Hydra ``-m``).

    python run.py                                   # digits, the default model
    python run.py optimizer=cosine layers.hidden=[128,64]
    python run.py -m optimizer=cosine,cyclic,plateau data=moons
    python run.py --cfg job | --help | hydra/launcher=joblib -m ...

A single run writes metrics.csv, summary.json, model.npz and curves.png into
outputs/runs/<date>/<time>/; a multirun writes one such folder per job under
outputs/multiruns/<date>/<time>/<job>/ plus results.csv and comparison plots
(app.multirun.MultirunResults, registered in conf/hydra/default.yaml). A run started in
a second another run already took gets <time>.1 (.2, ...): never a folder in use.

``main`` returns the validation metric (val_accuracy for classification, val_loss for
regression) so Hydra sweepers can optimise it. A bad value prints one line
``error: <field>: <what is allowed>`` and exits with status 2 before training; inside a
multirun the job is recorded as failed (error.txt) and the other jobs go on.

Bad overrides (an unknown option or key, a wrong type, a grammar error) fail while Hydra
composes, before ``main`` runs: ``cli`` turns them into the same one line and status 2 as
``search.py`` (app.compose.config_error), in a single run, a multirun (Hydra composes every
job before launching any), and with ``--cfg``. It asks Hydra for the exception through its
documented switch HYDRA_FULL_ERROR=1 rather than parsing the command line a second time, so
every Hydra flag (``--help``, ``--cfg``, ``-m``, ``-sc``, ``-cn``...) keeps working unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from app.compose import COMPOSE_ERRORS, config_error, register, release_claimed, to_experiment
from app.terminal import shown
from core.config import ConfigError

if TYPE_CHECKING:
    from sweeper.trial_link import TrialLink

log = logging.getLogger("nnsweep")
register()  # the ExperimentConfig schema conf/config.yaml names first in its defaults


def optimized_metric(summary: dict[str, Any], name: str | None = None) -> float:
    """What main returns to a Hydra sweeper: the config's ``optimized_metric``, by default
    val_accuracy (maximise) or, for regression, val_loss."""
    key = name or ("val_accuracy" if summary.get("task") == "classification" else "val_loss")
    value = summary.get(key)
    return float("nan") if value is None else float(value)


def progress(epochs: int) -> Callable[[dict], str | None]:
    """Trainer callback that logs about ten evenly spaced epochs of a run."""
    every = max(1, epochs // 10)

    def log_epoch(row: dict) -> None:
        epoch = row["epoch"]
        if epoch == 1 or epoch % every == 0 or epoch == epochs:
            acc = row["val_accuracy"]
            acc_text = "" if acc is None or math.isnan(acc) else f"  val_accuracy {acc:.4f}"
            log.info(
                f"epoch {epoch:>4}/{epochs}  train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}{acc_text}  lr {row['lr']:.3g}"
            )

    return log_epoch


def train(
    cfg: DictConfig,
    out_dir: str | Path | None,
    *,
    live: bool = False,
    link: TrialLink | None = None,
) -> dict[str, Any]:
    """Validate the composed config, train, write the run folder and draw its curves.png;
    return the summary.

    ``live``: a single run in a terminal shows the progress line and redraws curves.png
    while it trains (``view=...``); multirun jobs log ten epoch lines instead. ``link``
    (sweeper.trial_link.TrialLink): a trial of the nnsweep sweeper, which this job reports
    every epoch to and cross-validates like the study's other trials.
    """
    exp = to_experiment(cfg)  # ConfigError before any data is loaded
    from app.live import close_callbacks, default_callbacks
    from core.experiment import run  # numpy/pandas only when actually training

    v = exp.view
    callbacks = (
        default_callbacks(out_dir, exp.trainer.epochs, live_plot=v.live_plot, progress=v.progress,
                          interactive=v.interactive, title=exp.data.name)
        if live
        else [progress(exp.trainer.epochs)]
    )
    if link is not None:
        callbacks.append(link.report)
    reason = "error"
    try:
        if link is not None and link.cv > 1:
            from core.crossval import run_cv

            summary = run_cv(exp, link.cv, out_dir=out_dir, callbacks=callbacks)
        else:
            summary = run(exp, out_dir=out_dir, callbacks=callbacks)
        reason = summary["stop_reason"]
    finally:
        close_callbacks(callbacks, reason)
    if out_dir is not None:
        from app.figures import plot_run_curves

        plot_run_curves(out_dir, summary)
    if link is not None:
        link.finish(summary, out_dir)
    return summary


def _record_failure(
    out_dir: Path, message: str, detail: str, link: TrialLink | None = None
) -> None:
    """A failed multirun job: error.txt tells results.csv why (no summary.json is written),
    and the nnsweep sweeper's trial records the reason."""
    if link is not None:
        link.finish(out_dir=out_dir, fail_reason=message)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "error.txt").write_text(f"{message}\n\n{detail}")
    print(f"error: {message} (job folder {shown(out_dir)})", file=sys.stderr)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    link = None
    if os.environ.get("NNSWEEP_TRIAL"):  # a trial of the nnsweep sweeper (sweeper.trial_link)
        from sweeper.trial_link import TrialLink

        link = TrialLink.from_env()
    try:
        summary = train(cfg, out_dir, live=not multirun, link=link)
    except ConfigError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        _record_failure(out_dir, str(e), "", link)
        return float("nan")
    except Exception as e:  # one broken job must not end a whole multirun
        if not multirun:
            raise
        _record_failure(out_dir, f"{type(e).__name__}: {e}", traceback.format_exc(), link)
        return float("nan")
    metric = optimized_metric(summary, cfg.get("optimized_metric"))
    acc = summary.get("test_accuracy")
    test = (
        f"test_accuracy {acc:.4f}"
        if acc is not None and not math.isnan(acc)
        else (f"test_loss {summary['test_loss']:.4g}")
    )
    print(
        f"{test} after {summary['epochs_run']} epochs ({summary['stop_reason']}, "
        f"{summary['seconds']:.1f} s, engine {summary['engine']}); results in "
        f"{shown(out_dir)}{os.sep}"
    )
    return metric


def cli() -> None:
    """Run the Hydra app; a composition error anywhere is one line ``error: ...`` and status 2.

    Hydra prints its own many-line report and exits 1 unless HYDRA_FULL_ERROR=1, when it
    re-raises the original exception instead; that is what is caught here. A user who set
    HYDRA_FULL_ERROR=1 asked for the whole traceback and gets it.
    """
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except COMPOSE_ERRORS as e:
        release_claimed()  # a multirun's folder holding only multirun.yaml
        if wants_traceback:
            raise
        print(f"error: {config_error(e)}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:
        if e.code == 2:  # bad input in main: the run folder holds only .hydra/ and run.log
            release_claimed()
        raise


if __name__ == "__main__":
    cli()
