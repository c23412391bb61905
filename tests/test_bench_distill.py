"""bench/distill.py: validation split, augmentation, bootstrap, goals, report, smoke run."""

import numpy as np
import pytest
from bench_support import load_bench, run_quick

from tfpriors import calibration


@pytest.fixture(scope="module")
def bench():
    return load_bench("distill")


def test_validation_split_is_stratified_disjoint_and_seeded(bench):
    y = np.repeat(np.arange(10), 12)
    x = np.arange(len(y))[:, None].astype("float32")
    (xa, ya), (xv, yv) = bench.validation_split(x, y, per_class=3, seed=1)
    assert np.bincount(yv, minlength=10).tolist() == [3] * 10
    assert len(xa) == 90 and len(xv) == 30
    assert not set(xa[:, 0].tolist()) & set(xv[:, 0].tolist())
    np.testing.assert_array_equal(y[xv[:, 0].astype(int)], yv)  # images and labels paired
    (_, _), (again, _) = bench.validation_split(x, y, per_class=3, seed=1)
    np.testing.assert_array_equal(again, xv)
    (_, _), (other, _) = bench.validation_split(x, y, per_class=3, seed=2)
    assert set(other[:, 0].tolist()) != set(xv[:, 0].tolist())
    with pytest.raises(ValueError, match="per_class"):
        bench.validation_split(x, y, per_class=12)


def test_augmented_copies_shift_whole_images_and_are_seeded(bench):
    rng = np.random.default_rng(0)
    x = np.zeros((6, 10, 10), "float32")
    x[:, 3:7, 3:7] = rng.uniform(size=(6, 4, 4))
    x = x.reshape(6, 100)
    out = bench.augmented_copies(x, copies=3, noise=0.0, max_shift=2, seed=5)
    assert out.shape == (18, 100) and out.dtype == np.float32
    # Without noise a shift only moves pixels: each copy holds the same values.
    for copy in np.split(out, 3):
        np.testing.assert_allclose(np.sort(copy, axis=1), np.sort(x, axis=1))
    assert not np.array_equal(out, np.tile(x, (3, 1)))  # some images moved
    np.testing.assert_array_equal(out, bench.augmented_copies(x, 3, 0.0, 2, seed=5))
    plain = bench.augmented_copies(x, copies=2, noise=0.0, max_shift=0, seed=5)
    np.testing.assert_array_equal(plain, np.tile(x, (2, 1)))
    noisy = bench.augmented_copies(x, copies=1, noise=0.1, max_shift=0, seed=5)
    assert 0.05 < np.std(noisy - x) < 0.2
    with pytest.raises(ValueError, match="square"):
        bench.augmented_copies(np.zeros((2, 10), "float32"), 1, 0.0, 0, seed=0)


def test_per_example_nll_matches_the_mean_nll(bench):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype("float32") * 3
    labels = rng.integers(0, 10, size=50)
    per = bench.per_example_nll(logits, labels)
    assert per.shape == (50,) and np.all(per > 0)
    assert per.mean() == pytest.approx(calibration.nll(logits, labels), rel=1e-5)
    # Log-probabilities (an ensemble's output) give the same values.
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(bench.per_example_nll(log_probs, labels), per, rtol=1e-5)


def test_bootstrap_ratio_brackets_the_ratio_of_means(bench):
    rng = np.random.default_rng(0)
    a = rng.exponential(0.2, size=1000)
    b = a * 1.25 + rng.exponential(0.02, size=1000)
    low, high = bench.bootstrap_ratio(a, b, resamples=500)
    assert low < a.mean() / b.mean() < high < 1.0
    assert bench.bootstrap_ratio(a, a, resamples=50) == [1.0, 1.0]


def _result(single=0.25, ensemble=0.23, offline=0.24, online=0.30):
    def row(nll, params):
        return {
            "accuracy": 0.93,
            "nll": nll,
            "ece": 0.02,
            "seconds_train": 10.0,
            "inference_ms": 1.0 if params == 1 else 10.0,
            "inference_ratio_vs_ensemble": 0.1 if params == 1 else 1.0,
            "parameters": params,
            "cost_ratio_vs_ensemble": params / 10,
        }

    return {
        "data": {"name": "MNIST sample", "train": 4000, "test": 1000},
        "k": 10,
        "ensemble": "SGLD ensemble (k=10)",
        "rows": {
            "single SGD model": row(single, 1),
            "SGLD ensemble (k=10)": row(ensemble, 10),
            "offline-distilled student": row(offline, 1),
            "online BDK student": row(online, 1),
        },
        "nll_ratio_intervals": {
            key: [0.9, 1.1]
            for key in ("ensemble/single", "offline/ensemble", "offline/single", "online/ensemble")
        },
    }


def test_goals_are_ratios_against_their_baselines(bench):
    goals = {g["name"]: g for g in bench.goals(_result())}
    assert len(goals) == 4
    ens = goals["distill: SGLD ensemble NLL vs single SGD model (MNIST sample)"]
    assert ens["met"] and ens["ratio"] == pytest.approx(0.23 / 0.25)
    off = goals["distill: offline-distilled student NLL vs SGLD ensemble (MNIST sample)"]
    assert off["met"] and off["ratio"] == pytest.approx(0.24 / 0.23)
    assert "0.900-1.100" in off["note"]
    assert goals["distill: offline-distilled student NLL vs single SGD model (MNIST sample)"]["met"]
    online = goals["distill: online BDK student NLL vs SGLD ensemble (MNIST sample)"]
    assert not online["met"] and "not better than the single SGD model" in online["note"]
    # A student within 10% of the ensemble but worse than the single model misses that row only.
    goals = {g["name"]: g for g in bench.goals(_result(single=0.235, offline=0.245))}
    assert goals["distill: offline-distilled student NLL vs SGLD ensemble (MNIST sample)"]["met"]
    single = goals["distill: offline-distilled student NLL vs single SGD model (MNIST sample)"]
    assert not single["met"] and single["ratio"] == pytest.approx(0.245 / 0.235)


def test_report_section_renders_new_and_legacy_records():
    report = load_bench("_report_distill")
    bench_settings = load_bench("distill").FULL_SETTINGS
    part = dict(_result(), settings=bench_settings)
    diabetes = {
        "settings": {"hidden": 50, "lr": 1e-4, "epochs": 150},
        "k": 30,
        "rows": {"single SGD model": {"rmse": 60.0, "nll": 5.7}},
    }
    text = "\n".join(report.section({"classification": part, "diabetes": diabetes}))
    assert "MNIST sample (4000 training / 1000 test images), 784-400-10 MLPs" in text
    assert "chosen on a validation split" in text
    assert "| SGLD ensemble (k=10) | 93.00% | 0.2300 |" in text
    assert "offline/ensemble 0.900-1.100" in text
    assert "| single SGD model | 60.000 | 5.7000 |" in text
    legacy = dict(
        _result(),
        settings={
            "hidden": 100,
            "prior_variance": 1.0,
            "lr": 1e-3,
            "temperature": 0.03,
            "epochs": 60,
            "burn_in_epochs": 20,
        },
    )
    del legacy["nll_ratio_intervals"]
    text = "\n".join(report.section({"digits": legacy, "diabetes": diabetes}))
    assert "Digits, 64-100-10 MLP" in text and "bootstrap" not in text


@pytest.mark.slow
def test_quick_run_writes_a_complete_record():
    result = run_quick("distill")
    assert result["quick"] is True
    part = result["classification"]
    assert part["data"]["name"] == "digits"
    assert len(part["rows"]) == 4 and part["ensemble"] in part["rows"]
    for row in part["rows"].values():
        assert all(np.isfinite(row[key]) for key in ("accuracy", "nll", "ece", "inference_ms"))
    names = [g["name"] for g in result["goals"]]
    assert len(names) == 4 and all(name.endswith("(digits)") for name in names)
    assert all(np.isfinite(g["ratio"]) and isinstance(g["met"], bool) for g in result["goals"])
    assert all(np.isfinite(v) for pair in part["nll_ratio_intervals"].values() for v in pair)
    assert set(result["diabetes"]["rows"]) >= {"single SGD model", "online BDK student"}
