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


# --- from_logits: True, False or "auto" (the default) --------------------------

_METRICS = {
    "nll": calibration.nll,
    "accuracy": calibration.accuracy,
    "brier": calibration.brier,
    "ece": calibration.ece,
    "fit_temperature": calibration.fit_temperature,
    "calibrated_nll": calibration.calibrated_nll,
}


@pytest.mark.parametrize("name", sorted(_METRICS))
def test_auto_reads_logits_as_logits_and_probabilities_as_probabilities(name):
    metric = _METRICS[name]
    logits, labels = _overconfident(n=300, scale=2.0)
    probs = special.softmax(logits, axis=1)
    on_logits = metric(logits, labels)
    assert on_logits == metric(logits, labels, from_logits=True)
    assert metric(probs, labels) == pytest.approx(metric(probs, labels, from_logits=False))
    # The same distribution either way: logits and their softmax agree under "auto".
    assert metric(probs, labels) == pytest.approx(on_logits, rel=1e-4, abs=1e-9)


def test_auto_matches_hand_computed_nll_of_softmax_outputs():
    logits, labels = _overconfident(n=500, scale=1.0)  # calibrated
    probs = special.softmax(logits, axis=1).astype("float32")  # what a softmax model gives
    by_hand = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert calibration.nll(probs, labels) == pytest.approx(by_hand, rel=1e-5)
    # The old default (probabilities read as logits) was far off: flattened rows.
    flattened = -np.mean(special.log_softmax(probs, axis=1)[np.arange(len(labels)), labels])
    assert flattened > by_hand + 0.2


@pytest.mark.parametrize("name", sorted(_METRICS) + ["reliability_diagram"])
def test_explicit_from_logits_true_on_probability_rows_is_refused(name):
    metric = getattr(calibration, name)
    logits, labels = _overconfident(n=40)
    probs = special.softmax(logits, axis=1)
    with pytest.raises(ValueError, match=r"`from_logits=True`.*probabilit.*from_logits=False"):
        metric(probs, labels, from_logits=True)
    with pytest.raises(ValueError, match=r"`from_logits=False`.*not probabilities"):
        metric(logits, labels, from_logits=False)


@pytest.mark.parametrize("value", ["yes", "Auto", "", None, 1, 0, 1.5, "logits"])
def test_bad_from_logits_values_name_the_argument_and_the_accepted_ones(value):
    logits, labels = _overconfident(n=20)
    with pytest.raises((ValueError, TypeError), match=r'`from_logits` must be True.*"auto"'):
        calibration.nll(logits, labels, from_logits=value)
    with pytest.raises((ValueError, TypeError), match="from_logits"):
        calibration.reliability_diagram(logits, labels, from_logits=value)


def test_logits_that_look_like_probabilities_are_shifted_to_read_as_logits():
    """The documented rare case: non-negative logits whose rows sum to 1."""
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    labels = np.array([0, 1, 0])
    as_probabilities = -np.mean(np.log(np.clip(logits[np.arange(3), labels], 1e-12, 1)))
    assert calibration.nll(logits, labels) == pytest.approx(as_probabilities)
    shifted = logits - logits.max(axis=1, keepdims=True)
    as_logits = -np.mean(special.log_softmax(logits, axis=1)[np.arange(3), labels])
    assert calibration.nll(shifted, labels) == pytest.approx(as_logits)
    assert calibration.nll(shifted, labels, from_logits=True) == pytest.approx(as_logits)


def test_reliability_diagram_reads_logits_and_probabilities_alike(tmp_path):
    logits, labels = _overconfident(n=300)
    probs = special.softmax(logits, axis=1)
    title_of = lambda values: calibration.reliability_diagram(values, labels).axes[0].get_title()  # noqa: E731
    assert title_of(logits) == title_of(probs)
    assert f"{calibration.ece(probs, labels):.2%}" in title_of(logits)
