"""bench/tta.py: the search split, goals on medians, the RESULTS.md section, the smoke run."""

import math

import numpy as np
import pytest
from bench_support import load_bench, run_quick


@pytest.fixture(scope="module")
def bench():
    return load_bench("tta")


def test_search_split_is_stratified_disjoint_and_seeded(bench):
    y = np.repeat(np.arange(10), 40)  # sorted by class, as the MNIST sample is
    rest, held = bench.stratified_split(y, 50, seed=0)
    assert np.bincount(y[held], minlength=10).tolist() == [5] * 10
    assert sorted(np.concatenate([rest, held]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(held, bench.stratified_split(y, 50, seed=0)[1])
    assert set(held.tolist()) != set(bench.stratified_split(y, 50, seed=1)[1].tolist())
    with pytest.raises(ValueError, match="multiple of 10"):
        bench.stratified_split(y, 55)


def _metrics(cnll, seeds=None):
    metrics = {"accuracy": 0.9, "nll": cnll + 0.01, "calibrated_nll": cnll, "dee": 1.0}
    if seeds:
        metrics["seeds"] = seeds
    return metrics


def test_policy_goals_compare_gps_with_the_best_other_policy_at_the_goal_samples(bench):
    rows = [
        {
            "models": "single",
            "samples": 5,  # not a goal row
            "policies": {"no TTA": _metrics(0.2), "GPS": _metrics(0.3)},
            "best": "no TTA",
        },
        {
            "models": "single",
            "samples": 10,
            "policies": {"no TTA": _metrics(0.2), "shift": _metrics(0.15), "GPS": _metrics(0.1, 3)},
            "best": "GPS",
        },
        {
            "models": "ensemble of 5",
            "samples": 10,
            "policies": {"no TTA": _metrics(0.12), "shift": _metrics(0.1), "GPS": _metrics(0.11)},
            "best": "shift",
        },
    ]
    goals = bench.policy_goals("MNIST", rows, 10)
    assert len(goals) == 2
    met, missed = goals
    assert met["met"] and met["baseline_name"] == "shift" and met["ratio"] == pytest.approx(2 / 3)
    assert "median of 3 seeds" in met["name"]
    assert not missed["met"] and missed["ratio"] == pytest.approx(1.1)
    assert "GPS 0.1100 vs shift 0.1000 (+10.0%)" in missed["note"]


def test_median_metrics_takes_each_metric_s_median(bench):
    merged = bench.median_metrics([_metrics(0.3), _metrics(0.1), _metrics(0.2)])
    assert merged["calibrated_nll"] == pytest.approx(0.2)
    assert merged["nll"] == pytest.approx(0.21)
    assert merged["seeds"] == 3 and merged["calibrated_nll_per_seed"] == [0.3, 0.1, 0.2]


def _result():
    policies = {"no TTA": _metrics(0.2), "GPS": _metrics(0.01, 3)}
    return {
        "title": "TTA",
        "description": "text",
        "settings": {
            "data": "MNIST sample",
            "epochs": 7,
            "epoch_choice": "member 0's calibrated NLL on the search split",
            "search_split_calibrated_nll_by_epoch": {"1": 0.3, "2": 0.25},
            "members": 10,
            "search_split": 500,
            "train_images": 3500,
            "test_images": 1000,
            "train_policy": "shift+rotate",
            "pool_size": 200,
            "policy_length": 1,
            "randaugment_grid": {"3": 0.2, "6": 0.19},
            "randaugment_best_m": 6,
            "gps_policy": {"subpolicies": [[{"op": "rotate", "magnitude": 6.0}]]},
            "ensemble_curve": {"1": 0.2, "2": 0.15},
        },
        "rows": [{"models": "single", "samples": 10, "policies": policies, "best": "GPS"}],
        "equal_compute": [
            {
                "budget": 2,
                "ensemble_calibrated_nll": 0.15,
                "splits": [
                    {"members": 1, "samples": 2, "policy": "GPS", "calibrated_nll": 0.14}
                    | {"accuracy": 0.95}
                ],
            }
        ],
        "metta": {"central": 0.9, "mean": 0.91, "samples": 16},
        "speed": {
            "samples": 10,
            "images": 1000,
            "median_batched": 0.5,
            "median_per_augmentation_loop": 1.0,
            "parts_ms_per_image": {
                "augment_eager": 0.4,
                "augment_graph": 0.2,
                "model_eager": 0.6,
                "model_graph": 0.25,
            },
            "graph_work_ratio": 2.2,
            "predictor_overhead_ms_per_image": 0.05,
            "ratio_cap_free_model": 5.0,
        },
        "cifar10": {"skipped": "CIFAR-10: offline."},
    }


def test_report_section_shows_policies_equal_compute_and_the_speed_profile():
    report = load_bench("_report_tta")
    text = "\n".join(report.section(_result()))
    assert "### MNIST sample" in text
    assert "| single | 10 (median of 3 seeds) | 90.00% / 0.2100 / 0.2000 / 1.00 |" in text
    assert "/ 0.0100 / > 2 | GPS |" in text  # better than every ensemble: a lower bound
    assert "| 2 | 1 x 2 samples | GPS | 0.1400 | 95.00% |" in text
    assert "Epochs chosen by member 0's calibrated NLL on the search split: 1: 0.3000" in text
    assert "rotate(6)" in text and "chosen M = 6" in text
    assert "(2.0x)" in text and "augmentation eager 0.400, traced 0.200" in text
    assert "would still be 5.0x at most" in text
    assert "Skipped: CIFAR-10: offline." in text


def test_run_all_takes_the_tta_section_from_its_report_module():
    run_all = load_bench("run_all")
    assert "tta" not in run_all.SECTIONS
    assert run_all.section_renderer("tta").__module__ == "_report_tta"


@pytest.mark.slow
def test_quick_run_writes_a_complete_record():
    result = run_quick("tta")
    assert result["quick"] is True and result["dataset"] == "digits"
    names = [g["name"] for g in result["goals"]]
    assert sum("GPS calibrated NLL" in n for n in names) == 2  # single and ensemble
    assert sum("calls per image" in n for n in names) == 1
    assert any("speed-up" in n for n in names)
    for goal in result["goals"]:
        assert math.isfinite(goal["measured"]) and math.isfinite(goal["baseline"])
    assert set(result["rows"][0]["policies"]) >= {"no TTA", "shift", "shift+rotate", "GPS"}
    assert all(math.isfinite(v) for v in result["speed"]["parts_ms_per_image"].values())
    assert math.isfinite(result["speed"]["ratio_cap_free_model"])
