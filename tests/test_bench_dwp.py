"""bench/dwp.py: stratified subsets, goals on medians, the RESULTS.md section, the smoke run."""

import os

import numpy as np
import pytest
from bench_support import BENCH_DIR, load_bench, run_quick


@pytest.fixture(scope="module")
def dwp():
    return load_bench("dwp")


@pytest.fixture(scope="module")
def nets():
    return load_bench("_dwp_nets")


def test_subset_is_stratified_and_seeded(nets):
    y = np.repeat(np.arange(10), 40)
    x = np.arange(len(y))
    xa, ya = nets.subset(x, y, 50, seed=3)
    xb, yb = nets.subset(x, y, 50, seed=3)
    np.testing.assert_array_equal(xa, xb)
    assert np.bincount(ya, minlength=10).tolist() == [5] * 10
    np.testing.assert_array_equal(y[xa], ya)  # images and labels stay paired
    assert len(set(xa.tolist())) == 50
    other, _ = nets.subset(x, y, 50, seed=4)
    assert set(other.tolist()) != set(xa.tolist())


def _stats():
    layer = {"kernel_slices": 64, "vae_negative_elbo": 1.0, "kernel_std": 0.5}
    return {"conv1": dict(layer, vae_sample_std=0.3), "conv2": dict(layer, vae_sample_std=0.1)}


def test_goals_compare_medians_and_explain_misses(dwp):
    settings = {"train_sizes": [50, 100, 500], "init_epochs": [1, 5, 10]}
    # DWP ahead at 50 images; at 100 behind the normal prior on 2 of 3 seeds.
    priors = {
        "normal": {"50": [0.70, 0.60, 0.80], "100": [0.80, 0.85, 0.82], "500": [0.9] * 3},
        "log_uniform": {"50": [0.65] * 3, "100": [0.80, 0.81, 0.79], "500": [0.9] * 3},
        "learned_gaussian": {"50": [0.6] * 3, "100": [0.7] * 3, "500": [0.9] * 3},
        "DWP": {"50": [0.90, 0.50, 0.72], "100": [0.81, 0.84, 0.80], "500": [0.9] * 3},
    }
    inits = {
        "He": {"1": [0.9, 0.91, 0.92], "5": [0.95] * 3, "10": [0.96] * 3},
        "DWP": {"1": [0.91, 0.91, 0.50], "5": [0.94] * 3, "10": [0.99] * 3},
        "DWP + decoder noise": {"1": [0.9] * 3, "5": [0.953, 0.96, 0.95], "10": [0.9] * 3},
    }
    goals = {g["name"]: g for g in dwp.goals_of(settings, priors, inits, _stats())}
    assert len(goals) == 6  # 2 sizes x 2 priors, 2 epoch counts; 500 and 10 are no goals
    at_50 = goals["DWP prior vs standard normal, 50 MNIST images (median test accuracy)"]
    assert at_50["met"] and at_50["measured"] == 0.72 and at_50["baseline"] == 0.70
    assert at_50["note"] == ""
    at_100 = goals["DWP prior vs standard normal, 100 MNIST images (median test accuracy)"]
    assert not at_100["met"] and at_100["ratio"] == pytest.approx(0.81 / 0.82)
    assert "-1.0 pp" in at_100["note"] and "behind on 2 of 3 seeds" in at_100["note"]
    assert goals["DWP prior vs log-uniform, 100 MNIST images (median test accuracy)"]["met"]
    # Equal medians meet an "at least as accurate" goal.
    assert goals["DWP init vs He init, 1 epoch (median test accuracy)"]["met"]
    after_5 = goals["DWP init vs He init, 5 epochs (median test accuracy)"]
    assert not after_5["met"] and "it reaches 95.3% against He's 95.0%" in after_5["note"]


def test_report_section_shows_medians_ranges_and_layers():
    report = load_bench("_report_dwp")
    result = {
        "title": "DWP",
        "description": "text",
        "settings": {
            "sources": 4,
            "source_epochs": 5,
            "train_sizes": [50],
            "steps": {"50": 300},
            "init_epochs": [1],
        },
        "data": {"source": "letters", "target": "MNIST"},
        "source_test_accuracy": [0.9, 1.0],
        "layers": _stats(),
        "priors": {"normal": {"50": [0.7, 0.6, 0.8]}, "DWP": {"50": [0.75]}},
        "inits": {"He": {"1": [0.9, 0.92, 0.91]}},
        "timings": {"priors": 12.0},
        "seconds": 30.0,
        "plot": "results/dwp.png",
    }
    text = "\n".join(report.section(result))
    assert "| normal | 70.0% (60.0-80.0) |" in text
    assert "| DWP | 75.0% |" in text
    assert "| He init | 91.0% (90.0-92.0) |" in text
    assert "test accuracy 95.0% (mean)" in text
    assert "conv2: 64 slices" in text and "300 steps for 50 images" in text
    assert "priors 12 s; 30 s in all" in text


@pytest.mark.slow
def test_quick_run_writes_a_complete_record():
    result = run_quick("dwp")
    assert result["quick"] is True
    assert set(result["priors"]) == {"normal", "log_uniform", "learned_gaussian", "DWP"}
    for by_size in result["priors"].values():
        assert all(0.0 <= a <= 1.0 for a in by_size["50"]) and len(by_size["50"]) == 1
    assert set(result["inits"]) == {"He", "source filters", "DWP", "DWP + decoder noise"}
    assert set(result["layers"]) == {"conv1", "conv2"}
    assert len(result["goals"]) == 3  # DWP vs normal and log-uniform at 50; init after 1 epoch
    assert os.path.isfile(os.path.join(BENCH_DIR, result["plot"]))
