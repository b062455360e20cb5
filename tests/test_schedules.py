"""Every schedule against its formula at known times, computed here independently."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest

from core.config import CYCLIC_MODES, SCHEDULERS, SchedulerConfig
from core.schedules import (
    _CYCLIC_SCALE,
    SCHEDULES,
    ReduceLROnPlateau,
    cosine_lr,
    epoch_lrs,
    lr_at,
)

BASE = 0.1
TOTAL = 100


def half_cos(t_cur: float, period: float, hi: float = BASE, lo: float = 0.0) -> float:
    return lo + (hi - lo) * (1 + math.cos(math.pi * t_cur / period)) / 2


# ---------------------------------------------------------------- registry


def test_registry_keys_are_the_config_choices() -> None:
    assert tuple(SCHEDULES) == SCHEDULERS
    assert tuple(_CYCLIC_SCALE) == CYCLIC_MODES


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedule_keywords_are_config_fields(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(SchedulerConfig)} | {"base_lr", "total_epochs"}
    params = inspect.signature(SCHEDULES[name]).parameters.values()
    keywords = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert "base_lr" in keywords
    assert keywords <= fields


# ---------------------------------------------------------------- closed forms via lr_at

CASES = [
    # (scheduler config, t, expected lr)
    ({"name": "constant"}, 0.0, BASE),
    ({"name": "constant"}, 57.3, BASE),
    ({"name": "plateau"}, 12.5, BASE),
    ({"name": "step", "step_size": 10, "gamma": 0.5}, 0.0, BASE),
    ({"name": "step", "step_size": 10, "gamma": 0.5}, 9.99, BASE),
    ({"name": "step", "step_size": 10, "gamma": 0.5}, 10.0, BASE / 2),
    ({"name": "step", "step_size": 10, "gamma": 0.5}, 25.0, BASE / 4),
    ({"name": "step", "step_size": 2.5, "gamma": 0.1}, 5.0, BASE / 100),
    ({"name": "exponential", "gamma": 0.9}, 0.0, BASE),
    ({"name": "exponential", "gamma": 0.9}, 1.0, BASE * 0.9),
    ({"name": "exponential", "gamma": 0.9}, 2.5, BASE * 0.9**2 * math.sqrt(0.9)),
    # cosine over the whole run (t_max None -> total_epochs = 100)
    ({"name": "cosine"}, 0.0, BASE),
    ({"name": "cosine"}, 25.0, BASE * (1 + math.sqrt(0.5)) / 2),
    ({"name": "cosine"}, 50.0, BASE / 2),
    ({"name": "cosine"}, 100.0, 0.0),
    ({"name": "cosine"}, 150.0, 0.0),
    ({"name": "cosine", "eta_min": 0.01}, 50.0, 0.01 + 0.09 / 2),
    ({"name": "cosine", "eta_min": 0.01}, 130.0, 0.01),
    ({"name": "cosine", "t_max": 20}, 10.0, BASE / 2),
    ({"name": "cosine", "t_max": 20}, 20.0, 0.0),
    ({"name": "cosine", "t_max": 20, "eta_min": 0.02}, 35.0, 0.02),
]


@pytest.mark.parametrize(("kw", "t", "expected"), CASES)
def test_lr_at_closed_form(kw: dict, t: float, expected: float) -> None:
    assert lr_at(t, SchedulerConfig(**kw), BASE, TOTAL) == pytest.approx(expected, abs=1e-12)


# SGDR: (t_mult, t, time since restart, current period). t_0 = 10 throughout.
# t_mult=1 restarts at 10, 20, 30, ...; t_mult=2 at 10, 30, 70, 150 (periods 10, 20, 40, 80).
RESTARTS = [
    (1.0, 0.0, 0.0, 10.0),
    (1.0, 5.0, 5.0, 10.0),
    (1.0, 9.999, 9.999, 10.0),
    (1.0, 10.0, 0.0, 10.0),
    (1.0, 10.001, 0.001, 10.0),
    (1.0, 25.0, 5.0, 10.0),
    (1.0, 30.0, 0.0, 10.0),
    (1.0, 1000.0, 0.0, 10.0),
    (2.0, 0.0, 0.0, 10.0),
    (2.0, 5.0, 5.0, 10.0),
    (2.0, 10.0, 0.0, 20.0),
    (2.0, 10.001, 0.001, 20.0),
    (2.0, 20.0, 10.0, 20.0),
    (2.0, 29.999, 19.999, 20.0),
    (2.0, 30.0, 0.0, 40.0),
    (2.0, 30.5, 0.5, 40.0),
    (2.0, 50.0, 20.0, 40.0),
    (2.0, 70.0, 0.0, 80.0),
    (2.0, 150.0, 0.0, 160.0),
    (2.0, 10 * (2**40 - 1), 0.0, 10 * 2.0**40),  # closed form: no loop over restarts
    (3.0, 40.0, 0.0, 90.0),  # t_mult=3: restarts at 10, 40, 130
    (3.0, 129.0, 89.0, 90.0),
]


@pytest.mark.parametrize(("t_mult", "t", "t_cur", "period"), RESTARTS)
def test_cosine_warm_restarts(t_mult: float, t: float, t_cur: float, period: float) -> None:
    cfg = SchedulerConfig(name="cosine", t_0=10, t_mult=t_mult, t_max=5, eta_min=0.001)
    expected = half_cos(t_cur, period, lo=0.001)
    assert lr_at(t, cfg, BASE, TOTAL) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# restart points that float division / log put a hair early: (t_0, t_mult, t, period after it)
SNAPPED = [
    (1.0, 3.0, 121.0, 243.0),  # log(243) / log(3) = 4.999999999999999
    (1.0, 3.0, 29524.0, 59049.0),
    (1.0, 1.5, 13.1875, 1.5**5),
    (0.1, 1.0, 0.3, 0.1),  # 0.3 / 0.1 = 2.9999999999999996
    (0.1, 1.0, 1.7, 0.1),
]


@pytest.mark.parametrize(("t_0", "t_mult", "t", "period"), SNAPPED)
def test_cosine_restart_points_survive_rounding(
    t_0: float, t_mult: float, t: float, period: float
) -> None:
    cfg = SchedulerConfig(name="cosine", t_0=t_0, t_mult=t_mult, eta_min=0.001)
    assert lr_at(t, cfg, BASE, TOTAL) == pytest.approx(BASE, rel=1e-12)
    after = lr_at(t + period / 4, cfg, BASE, TOTAL)
    assert after == pytest.approx(half_cos(period / 4, period, lo=0.001), rel=1e-6)


def test_cosine_restart_at_every_step() -> None:
    cfg = SchedulerConfig(name="cosine", t_0=0.1)  # 10 steps per epoch: each one a restart
    np.testing.assert_allclose(epoch_lrs(3, 10, cfg, BASE, TOTAL), BASE, rtol=1e-12)


def test_cosine_restart_is_a_jump_back_to_base() -> None:
    cfg = SchedulerConfig(name="cosine", t_0=10, t_mult=2)
    before, at = lr_at(29.999, cfg, BASE, TOTAL), lr_at(30.0, cfg, BASE, TOTAL)
    assert before < 1e-6 * BASE and at == pytest.approx(BASE)


def test_schedule_called_directly_with_keywords() -> None:
    lr = cosine_lr(30.0, base_lr=1.0, total_epochs=1, t_max=None, t_0=10, t_mult=2, eta_min=0)
    assert float(lr) == pytest.approx(1.0)


# cyclic: base 0.001, max 0.011 (amplitude 0.01), step_size 2 -> cycle 1 is [0, 4), 2 is [4, 8)
# (mode, t, fraction of the triangle, scale of cycle); troughs at 0, 4, 8, peaks at 2, 6
AMP = 0.01
CYCLIC = [
    (mode, t, tri, scale)
    for mode, s1, s2 in [
        ("triangular", lambda t: 1.0, lambda t: 1.0),
        ("triangular2", lambda t: 1.0, lambda t: 0.5),
        ("exp_range", lambda t: 0.9**t, lambda t: 0.9**t),
    ]
    for t, tri, scale in [
        (0.0, 0.0, s1(0.0)),  # trough
        (1.0, 0.5, s1(1.0)),  # mid, rising
        (2.0, 1.0, s1(2.0)),  # peak
        (3.0, 0.5, s1(3.0)),  # mid, falling
        (4.0, 0.0, s2(4.0)),  # trough between cycles
        (5.0, 0.5, s2(5.0)),
        (6.0, 1.0, s2(6.0)),
        (7.5, 0.25, s2(7.5)),
    ]
]


@pytest.mark.parametrize(("mode", "t", "tri", "scale"), CYCLIC)
def test_cyclic(mode: str, t: float, tri: float, scale: float) -> None:
    cfg = SchedulerConfig(name="cyclic", mode=mode, step_size=2, max_lr=0.011, gamma=0.9)
    expected = 0.001 + AMP * tri * scale
    assert lr_at(t, cfg, 0.001, TOTAL) == pytest.approx(expected, rel=1e-12)


def test_cyclic_triangular2_halves_each_cycle() -> None:
    cfg = SchedulerConfig(name="cyclic", mode="triangular2", step_size=1, max_lr=1.0)
    peaks = [lr_at(1.0 + 2 * k, cfg, 0.0, TOTAL) for k in range(4)]
    assert peaks == pytest.approx([1.0, 0.5, 0.25, 0.125])


# warmup over 5 epochs from 0.1 * lr on top of cosine over 100 epochs
@pytest.mark.parametrize(
    ("t", "factor"),
    [(0.0, 0.1), (1.0, 0.1 + 0.9 * 0.2), (2.5, 0.55), (4.99, 0.1 + 0.9 * 4.99 / 5), (5.0, 1.0),
     (50.0, 1.0)],
)
def test_warmup_on_cosine(t: float, factor: float) -> None:
    cfg = SchedulerConfig(name="cosine", warmup_epochs=5, warmup_start=0.1)
    assert lr_at(t, cfg, BASE, TOTAL) == pytest.approx(half_cos(t, TOTAL) * factor, rel=1e-12)


def test_no_warmup_by_default() -> None:
    assert lr_at(0.0, SchedulerConfig(name="cosine"), BASE, TOTAL) == BASE


# ---------------------------------------------------------------- epoch_lrs

EPOCH_CFGS = [
    {"name": "constant"},
    {"name": "step", "step_size": 0.5, "gamma": 0.7},
    {"name": "exponential", "gamma": 0.8},
    {"name": "cosine", "t_max": 4, "warmup_epochs": 3.5, "warmup_start": 0.2},
    {"name": "cosine", "t_0": 1.5, "t_mult": 2},
    {"name": "cyclic", "mode": "exp_range", "step_size": 0.75, "max_lr": 0.5},
    {"name": "plateau", "warmup_epochs": 4},
]


@pytest.mark.parametrize("kw", EPOCH_CFGS)
@pytest.mark.parametrize("epoch", [0, 3])
def test_epoch_lrs_matches_lr_at(kw: dict, epoch: int) -> None:
    cfg, n = SchedulerConfig(**kw), 7
    lrs = epoch_lrs(epoch, n, cfg, BASE, 10)
    assert lrs.dtype == np.float64 and lrs.shape == (n,)
    assert lrs[0] == lr_at(float(epoch), cfg, BASE, 10)
    expected = [lr_at(epoch + i / n, cfg, BASE, 10) for i in range(n)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-13, atol=0)


def test_epoch_lrs_is_writable_and_long() -> None:
    lrs = epoch_lrs(2, 1000, SchedulerConfig(name="constant"), BASE, 10)
    lrs[0] = 0.0  # a fresh array, not a broadcast view
    assert lrs.shape == (1000,) and np.all(lrs[1:] == BASE)


# ---------------------------------------------------------------- ReduceLROnPlateau

PLATEAU = [
    # (config, metric per epoch, epochs where the lr is cut, final lr); base lr 1.0
    pytest.param(
        {"patience": 2, "threshold": 0.0}, [5, 4, 4, 4, 4, 4, 4, 4], [4, 7], 0.25, id="patience"
    ),
    pytest.param(
        {"patience": 1, "cooldown": 2, "threshold": 0.0}, [1.0] * 11, [2, 6, 10], 0.125,
        id="cooldown",
    ),
    # relative threshold: 9.5 is not 10% below best=10, so best stays 10; 8.5 is below 9;
    # 8.0 is not below 8.5 * 0.9 = 7.65 (an absolute threshold of 0.1 would accept all three)
    pytest.param(
        {"patience": 0, "threshold": 0.1}, [10, 9.5, 8.5, 8.0], [1, 3], 0.25, id="threshold"
    ),
    pytest.param(  # max mode: needs > best * 1.1: 10.5 no, 11.5 > 11 yes, 12 > 12.65 no
        {"patience": 0, "threshold": 0.1, "plateau_mode": "max"}, [10, 10.5, 11.5, 12], [1, 3],
        0.25, id="threshold_max",
    ),
    pytest.param(
        {"patience": 0, "min_lr": 0.3}, [1.0] * 5, [1, 2], 0.3, id="min_lr_clamp"
    ),
    pytest.param(
        {"patience": 1, "factor": 0.1, "monitor": "val_accuracy", "threshold": 0.0},
        [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7], [3, 6], 0.01, id="auto_max_for_accuracy",
    ),
    pytest.param(
        {"patience": 1, "plateau_mode": "max", "threshold": 0.0},
        [1, 2, 3, 3, 3, 4], [4], 0.5, id="explicit_max",
    ),
    pytest.param(  # a falling accuracy is an improvement in explicit min mode
        {"patience": 1, "plateau_mode": "min", "monitor": "train_accuracy"},
        [0.9, 0.8, 0.7, 0.6], [], 1.0, id="explicit_min",
    ),
    pytest.param(
        {"patience": 1}, [1.0, math.nan, math.nan, 0.5, math.nan], [2], 0.5, id="nan"
    ),
    pytest.param(
        {"patience": 0}, [math.nan, 2.0, 2.0], [0, 2], 0.25, id="nan_first"
    ),
]


@pytest.mark.parametrize(("kw", "values", "cut_at", "final_lr"), PLATEAU)
def test_plateau_reductions(kw: dict, values: list, cut_at: list, final_lr: float) -> None:
    sched = ReduceLROnPlateau(SchedulerConfig(name="plateau", **kw), 1.0)
    cuts = [epoch for epoch, v in enumerate(values) if sched.step(v)]
    assert cuts == cut_at
    assert sched.lr == pytest.approx(final_lr, rel=1e-12)


def test_plateau_lr_trace() -> None:
    sched = ReduceLROnPlateau(SchedulerConfig(patience=0, factor=0.5, min_lr=0.3), 1.0)
    lrs = []
    for v in [1.0] * 5:
        sched.step(v)
        lrs.append(sched.lr)
    assert lrs == [1.0, 0.5, 0.3, 0.3, 0.3]


def test_plateau_state_dict_round_trip() -> None:
    cfg = SchedulerConfig(patience=1, cooldown=1, threshold=0.0)
    values = [3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.5, 1.5, 1.5, 1.5]
    whole = ReduceLROnPlateau(cfg, 0.2)
    expected = [whole.step(v) for v in values]

    first = ReduceLROnPlateau(cfg, 0.2)
    got = [first.step(v) for v in values[:4]]
    state = first.state_dict()
    assert all(type(x) in (int, float) for x in state.values())
    second = ReduceLROnPlateau(cfg, 0.2)
    second.load_state_dict(dict(state))
    got += [second.step(v) for v in values[4:]]
    assert got == expected and any(expected)
    assert second.state_dict() == whole.state_dict()
