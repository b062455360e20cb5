"""A terminal progress bar for a study: trials done, best value so far, ETA."""

from __future__ import annotations

import sys


class StudyProgress:
    def __init__(self, target: int, *, enabled: bool = True, label: str = "trials") -> None:
        self.target, self.enabled, self.label = target, enabled, label
        self.bar = None

    def update(self, counts: dict[str, int], best: float | None) -> None:
        """Redraw with the trial counts by state (sweeper.claim.counts) and the best value."""
        if not self.enabled:
            return
        c = counts
        done = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
        if self.bar is None:
            from tqdm.auto import tqdm

            # initial=done: a resumed study's ETA comes from this session's pace only
            self.bar = tqdm(total=self.target, initial=min(done, self.target), unit="trial",
                            file=sys.stderr, dynamic_ncols=True, desc=self.label)
        self.bar.set_postfix_str(
            f"best={best:.4g} complete={c['COMPLETE']} pruned={c['PRUNED']} fail={c['FAIL']} "
            f"running={c['RUNNING']}" if best is not None else f"running={c['RUNNING']}",
            refresh=False,
        )
        step = max(0, min(done, self.target) - self.bar.n)
        if step:
            self.bar.update(step)  # one redraw with the new count and postfix together
        else:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
