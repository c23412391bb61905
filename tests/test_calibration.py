import matplotlib.image
import numpy as np
import pytest
from scipy import special

from tfpriors import calibration


def _overconfident(n=4000, classes=5, scale=3.0, seed=0):
    """Labels drawn from softmax(z); logits = scale * z are overconfident by `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    probs = special.softmax(z, axis=1)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return scale * z, labels


def test_nll_accuracy_brier_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = np.array([0, 1, 0])
    probs = special.softmax(logits, axis=1)
    expected_nll = -np.mean(np.log(probs[[0, 1, 2], labels]))
    assert calibration.nll(logits, labels) == pytest.approx(expected_nll)
    assert calibration.nll(probs, labels, from_logits=False) == pytest.approx(expected_nll)
    assert calibration.accuracy(logits, labels) == pytest.approx(2 / 3)
    onehot = np.eye(2)[labels]
    assert calibration.brier(logits, labels) == pytest.approx(
        np.mean(np.sum((probs - onehot) ** 2, 1))
    )


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    labels = np.array([0, 1, 0, 0])
    # One bin: ECE = |mean confidence - accuracy|.
    assert calibration.ece(probs, labels, from_logits=False, bins=1) == pytest.approx(
        abs(np.mean([0.9, 0.8, 0.6, 0.55]) - 0.75)
    )
    # Ten bins: 0.9 and 0.8 sit alone; 0.6 and 0.55 share (0.5, 0.6], both correct,
    # so their bin contributes 2 * |0.575 - 1| = 0.4 + 0.45.
    assert calibration.ece(probs, labels, from_logits=False, bins=10) == pytest.approx(
        np.mean([0.1, 0.8, 0.4, 0.45])
    )


def test_temperature_recovers_the_overconfidence():
    logits, labels = _overconfident(scale=3.0)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    assert calibration.fit_temperature(logits / 3.0, labels) == pytest.approx(1.0, rel=0.1)


def test_calibrated_nll_is_held_out_and_seeded():
    logits, labels = _overconfident(n=2000, scale=3.0)
    raw = calibration.nll(logits, labels)
    calibrated = calibration.calibrated_nll(logits, labels, splits=5, seed=1)
    oracle = calibration.nll(logits / 3.0, labels)
    assert calibrated < raw
    # Held-out fitting costs a little against the oracle temperature, never gains much.
    assert oracle - 0.01 < calibrated < oracle + 0.02
    assert calibrated == calibration.calibrated_nll(logits, labels, splits=5, seed=1)
    assert calibrated != calibration.calibrated_nll(logits, labels, splits=5, seed=2)
    calibrated_ece = calibration.ece(logits / calibration.fit_temperature(logits, labels), labels)
    assert calibrated_ece < calibration.ece(logits, labels)


def test_deep_ensemble_equivalent():
    curve = {1: 0.20, 2: 0.17, 4: 0.15, 8: 0.14}
    assert calibration.deep_ensemble_equivalent(0.17, curve) == pytest.approx(2.0)
    assert calibration.deep_ensemble_equivalent(0.16, curve) == pytest.approx(3.0)
    assert calibration.deep_ensemble_equivalent(0.145, curve) == pytest.approx(6.0)
    assert calibration.deep_ensemble_equivalent(0.30, curve) == 1.0
    assert calibration.deep_ensemble_equivalent(0.10, curve) == 8.0
    with pytest.raises(ValueError, match="ensemble_curve"):
        calibration.deep_ensemble_equivalent(0.1, {1: 0.2})
    with pytest.raises(TypeError, match="ensemble_curve"):
        calibration.deep_ensemble_equivalent(0.1, [0.2, 0.1])
    with pytest.raises(TypeError, match="metric_value"):
        calibration.deep_ensemble_equivalent("low", curve)


def test_reliability_diagram_writes_a_png(tmp_path):
    logits, labels = _overconfident(n=500)
    probs = special.softmax(logits, axis=1)
    path = tmp_path / "reliability.png"
    calibration.reliability_diagram(probs, labels, str(path))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reliability.png"]


@pytest.mark.parametrize(
    "values,labels,kwargs,match",
    [
        (np.zeros((3,)), [0, 1, 0], {}, "values"),
        (np.zeros((3, 1)), [0, 0, 0], {}, "values"),
        (np.zeros((3, 2)), [0, 1], {}, "labels"),
        (np.zeros((3, 2)), [0, 2, 1], {}, "labels"),
        (np.zeros((3, 2)), [0, -1, 1], {}, "labels"),
        (np.zeros((3, 2)), [0.5, 1, 1], {}, "labels"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1], {}, "NaN"),
        (np.array([[0.7, 0.7], [0.5, 0.5]]), [0, 1], {"from_logits": False}, "probabilities"),
        (np.zeros((3, 2)), [0, 1, 1], {"from_logits": "yes"}, "from_logits"),
        (np.zeros((0, 2)), np.zeros((0,), int), {}, "empty"),
    ],
)
def test_bad_inputs_name_the_argument(values, labels, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        calibration.nll(values, labels, **kwargs)


def test_bad_bins_and_splits():
    logits, labels = _overconfident(n=20)
    with pytest.raises((ValueError, TypeError), match="bins"):
        calibration.ece(logits, labels, bins=0)
    with pytest.raises((ValueError, TypeError), match="splits"):
        calibration.calibrated_nll(logits, labels, splits=0)
