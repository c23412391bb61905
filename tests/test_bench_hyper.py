"""bench/hyper.py: validation split, pruned curves, goals, RESULTS.md section, smoke run."""

import math
import os

import numpy as np
import pytest
from bench_support import BENCH_DIR, load_bench, run_quick


@pytest.fixture(scope="module")
def hyper():
    return load_bench("hyper")


def test_validation_split_is_fixed_disjoint_and_paired(hyper):
    x = np.arange(50, dtype="float32")[:, None]
    y = np.arange(50)
    (x_fit, y_fit), (x_val, y_val) = hyper.validation_split(x, y, held_out=10)
    (again, _), _ = hyper.validation_split(x, y, held_out=10)
    np.testing.assert_array_equal(x_fit, again)
    assert len(x_fit) == 40 and len(x_val) == 10
    assert not set(y_fit.tolist()) & set(y_val.tolist())
    np.testing.assert_array_equal(x_val[:, 0].astype(int), y_val)  # images stay with labels
    (other, _), _ = hyper.validation_split(x, y, held_out=10, seed=1)
    assert not np.array_equal(other, x_fit)
    with pytest.raises(ValueError, match="held_out"):
        hyper.validation_split(x, y, held_out=50)


def test_pruned_curve_removes_the_lowest_scores_first(hyper):
    # Two classes read off two inputs through a ReLU layer; a weak third unit adds noise.
    x = np.array([[1.0, 0.0], [0.0, 1.0]] * 5, "float32")
    y = np.array([0, 1] * 5)
    first = (np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.3]], "float32"), np.zeros(3, "float32"))
    second = (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32"))
    assert hyper.plain_accuracy([first, second], x, y) == 1.0
    # Swapping the output kernel's columns makes every prediction wrong.
    assert hyper.plain_accuracy([first, (second[0][:, ::-1].copy(), second[1])], x, y) == 0.0
    good = [np.abs(first[0]) * 10, np.abs(second[0]) * 10]
    curve = hyper.pruned_curve(good, [first, second], x, y)
    assert len(curve) == len(hyper.FRACTIONS) and curve[0] == 1.0
    # With the useful weights scored lowest, 50% removed takes out the diagonal.
    bad = [1.0 / (1e-3 + s) for s in good]
    assert hyper.pruned_curve(bad, [first, second], x, y)[1] < 1.0


def _goals(hyper, hyper_shift_pp, hyper_seconds, separate_seconds=30.0):
    separate = [[0.95, 0.94, 0.9, 0.85, 0.8, 0.7]] * len(hyper.LAMBDAS)
    shifted = [[a - s / 100 for a in curve] for curve, s in zip(separate, hyper_shift_pp)]
    result = {kind: {"curves": shifted, "seconds": hyper_seconds} for kind in hyper.KINDS}
    return {g["name"]: g for g in hyper.goals_of(separate, result, separate_seconds)}


def test_goals_hold_within_one_point_at_every_lambda(hyper):
    goals = _goals(hyper, [0.5, -2.0, 0.9, 0.0, 0.2], hyper_seconds=9.0)
    assert len(goals) == 4
    accuracy = goals["hyper: linear hypernetwork accuracy, worst lambda (0.1)"]
    assert accuracy["met"] and accuracy["measured"] == pytest.approx(accuracy["baseline"] - 0.9)
    time_goal = goals["hyper: lowrank hypernetwork training time"]
    assert time_goal["met"] and time_goal["ratio"] == pytest.approx(0.3)
    assert time_goal["note"] == ""


def test_goals_miss_and_say_why(hyper):
    goals = _goals(hyper, [0.0, 0.0, 0.0, 0.0, 1.5], hyper_seconds=12.0)
    accuracy = goals["hyper: lowrank hypernetwork accuracy, worst lambda (10)"]
    assert not accuracy["met"]
    assert "lambda 10: +1.50" in accuracy["note"] and "spans" in accuracy["note"]
    assert (
        "At lambda 10, shortfall in pp by fraction removed: 0%: +1.5, 50%: +1.5"
        in (accuracy["note"])
    )
    time_goal = goals["hyper: linear hypernetwork training time"]
    assert not time_goal["met"] and time_goal["ratio"] == pytest.approx(0.4)
    # 12 s against one separate model's 6 s: twice as long, per step.
    assert "2.00x as long as one separate model" in time_goal["note"]


def test_jobs_alternate_their_order(hyper):
    assert hyper.jobs_of(0)[0] == ("separate", hyper.LAMBDAS[0])
    assert hyper.jobs_of(1) == hyper.jobs_of(0)[::-1]


def test_report_section_shows_curves_times_and_validation():
    report = load_bench("_report_hyper")
    lambdas = [0.1, 1.0]
    curve = [0.9, 0.8]
    result = {
        "title": "Hyper",
        "description": "text",
        "settings": {
            "data": "MNIST sample",
            "net": "784-100-10 ReLU",
            "optimizer": "SGD lr 0.05 momentum 0.9",
            "batch_size": 100,
            "epochs": 40,
            "prior_variance": 0.1,
            "lambda_range": [1e-3, 10.0],
            "lambda_draws": 5,
            "lowrank_rank": 2,
            "lowrank_hidden_units": 50,
            "repeats": 3,
            "lambdas": lambdas,
            "fractions": [0.0, 0.5],
            "train_examples": 4000,
            "test_examples": 1000,
            "validation": "chosen on a split.",
        },
        "separate": {
            "curves": [curve, curve],
            "seconds_total": 20.0,
            "seconds_per_lambda": [10.0, 10.0],
            "ms_per_step": 4.0,
        },
        "hyper": {
            kind: {"curves": [curve, curve], "seconds": 5.0, "ms_per_step": 8.0}
            for kind in ("linear", "lowrank")
        },
        "plot": "results/hyper.png",
    }
    text = "\n".join(report.section(result))
    assert "| 0.1 | separate | 90.0% | 80.0% | 85.0% |" in text
    assert "| linear hypernetwork | 5.0 s | 0.25 | 8.0 |" in text
    assert "| 5 separate models | 20.0 s | 1.00 | 4.0 (each of 2) |" in text
    assert "(MNIST sample)" in text and "Learning rate and epochs: chosen on a split." in text


@pytest.mark.slow
def test_quick_run_writes_a_complete_record():
    result = run_quick("hyper")
    assert result["quick"] is True and result["settings"]["data"] == "digits"
    names = [goal["name"] for goal in result["goals"]]
    assert len(names) == 4 and sum("training time" in name for name in names) == 2
    for goal in result["goals"]:
        assert math.isfinite(goal["measured"]) and math.isfinite(goal["baseline"])
        assert goal["baseline"] > 0 and isinstance(goal["met"], bool)
    for kind in ("linear", "lowrank"):
        curves = result["hyper"][kind]["curves"]
        assert len(curves) == 5 and all(0.0 <= a <= 1.0 for c in curves for a in c)
    assert os.path.isfile(os.path.join(BENCH_DIR, result["plot"]))
