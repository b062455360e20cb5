"""``search.py --list``: the studies under a root folder (and in a database), at a glance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .claim import counts


def study_rows(root: Path, storage_url: str | None = None) -> list[dict]:
    """One row per study: name, where, trials by state, best value (or the size of the
    Pareto front), last update."""
    import optuna

    from .storage import describe_storage, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sources: list[tuple[str, object]] = []
    if storage_url:
        sources.append((describe_storage(storage_url, root), open_storage(storage_url, root)))
    for journal in sorted(Path(root).glob("*/journal.log")):
        sources.append((str(journal.parent), open_storage(None, journal.parent)))
    rows = []
    for where, storage in sources:
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            ends = [t.datetime_complete or t.datetime_start for t in trials]
            ends = [e for e in ends if e is not None]
            if len(study.directions) > 1:  # several objectives: the size of the front
                from .objectives import pareto_trials

                best = f"front of {len(pareto_trials(study))}"
            else:
                try:
                    best = study.best_value  # the best feasible value under constraints
                except ValueError:
                    best = None
            c = counts(study)
            rows.append({
                "study": summary.study_name,
                "metric": study.user_attrs.get("metric", "?"),
                "best": best,
                "complete": c["COMPLETE"], "pruned": c["PRUNED"], "fail": c["FAIL"],
                "running": c["RUNNING"] + c["WAITING"],
                "updated": max(ends).strftime("%Y-%m-%d %H:%M") if ends else "-",
                "where": where,
            })
    return rows


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "no studies"
    head = ["study", "metric", "best", "complete", "pruned", "fail", "running", "updated", "where"]
    cells = [[_cell(r[h]) for h in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)
