"""scripts/measure_cv.py: how its selection rules rank configurations."""

from __future__ import annotations

import pandas as pd

from tests.helpers import load_script


def test_measure_cv_rank_rules_and_tie_break():
    module = load_script("measure_cv")
    group = pd.DataFrame({"cv_val_acc": [0.9, 0.95, 0.95, 0.5],
                          "cv_val_loss": [0.3, 0.2, 0.1, 2.0]})
    acc = module.rank_scores(group, module.RULES["cv val_accuracy"])
    assert acc.tolist() == [3.0, 1.5, 1.5, 4.0]  # tied configurations share their mean rank
    tie_break = module.rank_scores(group, module.RULES["cv val_acc, loss tie-break"])
    assert tie_break.tolist() == [3.0, 2.0, 1.0, 4.0]
    loss = module.rank_scores(group, module.RULES["cv val_loss"])
    assert loss.tolist() == [3.0, 2.0, 1.0, 4.0]
