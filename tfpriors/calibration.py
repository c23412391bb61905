"""Calibration metrics: NLL, accuracy, ECE, Brier, temperature scaling, calibrated NLL, DEE.

All functions take NumPy-compatible arrays: ``values`` of shape
``(n, num_classes)`` (logits or probabilities) and integer ``labels`` of
shape ``(n,)``. They return Python floats.

``from_logits`` is ``"auto"`` by default: when every row of ``values`` is a
probability vector (non-negative, summing to 1 within 1e-3, more for
half-precision values) the rows are read as probabilities, anything else as
logits (log-probabilities are logits too). ``from_logits=True`` on rows that
are all probability vectors is refused, and so is ``from_logits=False`` on
rows that are not. Logits that happen to look like probability rows are read
as probabilities by ``"auto"``; shift them by a constant per row first
(``values - values.max(axis=1, keepdims=True)``: the same softmax) to have
them read as logits.

Calibrated NLL follows Ashukha et al. (2020): the temperature is fitted on
one random half of the test set and the NLL scored on the other half, the
halves swapped, and the result averaged over several random splits, so no
test example scores a temperature it helped to fit.

Example:
>>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0], [0.5, 0.0]])
>>> labels = np.array([0, 1, 1, 1])
>>> round(tfpriors.calibration.nll(logits, labels), 4)
0.3853
>>> tfpriors.calibration.accuracy(logits, labels)
0.75
"""

import numpy as np
from scipy import optimize, special

from tfpriors import _probabilities, _validation
from tfpriors.io import save_figure

# Probabilities are clipped here before the log: a probability of exactly
# zero on the true class would make the NLL infinite.
_EPS = 1e-12
# Bounds of the log-temperature search (T from 0.01 to 100).
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def _check(values, labels, from_logits):
    """Checked ``(values, labels, from_logits)``, ``from_logits`` resolved to a bool."""
    from_logits = _probabilities.check_from_logits(from_logits)
    # The tolerance of the row sums follows the precision the scores came in.
    dtype = getattr(values, "dtype", None)
    values = _validation.numeric_array(values, "values", dtype="float64")
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(
            "`values` (logits or probabilities) must have shape (n, num_classes) "
            f"with num_classes >= 2; received shape {values.shape}."
        )
    values = _validation.finite_batch(values, "values", dtype="float64")
    labels = _validation.class_labels(labels, "labels", len(values), values.shape[1])
    from_logits = _probabilities.resolve(values, from_logits, axis=1, dtype=dtype)
    return values, labels, from_logits


def _log_probs(values, from_logits, temperature=1.0):
    if from_logits:
        return special.log_softmax(values / temperature, axis=1)
    return np.log(np.clip(values, _EPS, 1.0))


def nll(values, labels, from_logits="auto"):
    """Mean negative log-likelihood of the true labels.

    Args:
        values: ``(n, num_classes)`` logits or probabilities.
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).

    Returns:
        The mean of ``-log p(label)`` over the examples, a float (probabilities
        are clipped at 1e-12 first, so it stays finite).

    Raises:
        ValueError: for ``from_logits=True`` on rows that are all probability
            vectors, ``from_logits=False`` on rows that are not, and for
            ``values`` or ``labels`` of the wrong shape or with NaN or inf.
        TypeError: for a ``from_logits`` that is not a bool or ``"auto"``.

    Example:
    >>> round(tfpriors.calibration.nll([[2.0, 0.0], [0.0, 1.0]], [0, 1]), 4)  # logits
    0.2201
    >>> round(tfpriors.calibration.nll([[0.9, 0.1], [0.2, 0.8]], [0, 1]), 4)  # probabilities
    0.1643
    >>> tfpriors.calibration.nll([[0.9, 0.1], [0.2, 0.8]], [0, 1], from_logits=True)
    Traceback (most recent call last):
    ...
    ValueError: `from_logits=True`, but every row of the scores is a probability vector ...
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    log_probs = _log_probs(values, from_logits)
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def accuracy(values, labels, from_logits="auto"):
    """Fraction of examples whose arg-max class is the label.

    Args:
        values: ``(n, num_classes)`` logits or probabilities.
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).

    Returns:
        The accuracy in [0, 1], a float.

    Example:
    >>> logits = [[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]]
    >>> tfpriors.calibration.accuracy(logits, [0, 1, 1, 1])
    0.75
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    return float(np.mean(values.argmax(1) == labels))


def brier(values, labels, from_logits="auto"):
    """Brier score: mean over examples of the squared error of the probability vector.

    Args:
        values: ``(n, num_classes)`` logits or probabilities.
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).

    Returns:
        ``mean(sum((p - onehot(label)) ** 2))``, a float in [0, 2].

    Example:
    >>> round(tfpriors.calibration.brier([[0.9, 0.1], [0.4, 0.6]], [0, 1], from_logits=False), 4)
    0.17
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    probs = np.exp(_log_probs(values, from_logits))
    onehot = np.eye(values.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _bin_statistics(probs, labels, bins):
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_confidence = np.bincount(index, confidence, bins) / np.maximum(counts, 1)
    mean_accuracy = np.bincount(index, correct, bins) / np.maximum(counts, 1)
    return edges, counts, mean_confidence, mean_accuracy


def ece(values, labels, from_logits="auto", bins=15):
    """Expected calibration error over ``bins`` equal-width confidence bins.

    The examples are binned by their confidence (the largest probability);
    the ECE is the mean over examples of ``|confidence - accuracy|`` of
    their bin.

    Args:
        values: ``(n, num_classes)`` logits or probabilities.
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).
        bins: number of equal-width confidence bins on [0, 1].

    Returns:
        The ECE in [0, 1], a float.

    Example:
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> round(tfpriors.calibration.ece(probs, [0, 1, 1, 0], from_logits=False, bins=5), 4)
    0.25
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    bins = _validation.positive_int(bins, "bins")
    probs = np.exp(_log_probs(values, from_logits))
    _, counts, confidence, hits = _bin_statistics(probs, labels, bins)
    return float(np.sum(counts * np.abs(confidence - hits)) / len(labels))


def _as_logits(values, from_logits):
    # Temperature scaling of probabilities acts on their logs (logits up to a constant).
    return values if from_logits else np.log(np.clip(values, _EPS, 1.0))


def fit_temperature(values, labels, from_logits="auto"):
    """The temperature T minimising the NLL of ``softmax(logits / T)``, as a float.

    Fitted with scipy's bounded scalar minimiser on log T in [log 0.01, log 100].

    Args:
        values: ``(n, num_classes)`` logits, or probabilities (then their
            logs are scaled).
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).

    Returns:
        The fitted temperature T, a float in [0.01, 100]; T > 1 softens an
        overconfident model.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> logits = 3.0 * rng.normal(size=(200, 3))
    >>> labels = np.argmax(logits + 2.0 * rng.normal(size=(200, 3)), axis=1)
    >>> t = tfpriors.calibration.fit_temperature(logits, labels)
    >>> round(t, 2)
    1.27
    >>> nll = tfpriors.calibration.nll
    >>> bool(nll(logits / t, labels) < nll(logits, labels))
    True
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    return _fit_temperature(_as_logits(values, from_logits), labels)


def _fit_temperature(logits, labels):
    rows = np.arange(len(labels))

    def objective(log_t):
        return -np.mean(special.log_softmax(logits / np.exp(log_t), axis=1)[rows, labels])

    result = optimize.minimize_scalar(
        objective, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))


def calibrated_nll(values, labels, from_logits="auto", splits=5, seed=0):
    """NLL after temperature scaling fitted on held-out halves of the data.

    For each of ``splits`` random permutations: fit T on the first half and
    score the second, fit on the second and score the first; the result is
    the mean of all these scores.

    Args:
        values: ``(n, num_classes)`` logits or probabilities; ``n >= 4``.
        labels: ``(n,)`` integer class labels.
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).
        splits: number of random half/half permutations.
        seed: seed of the permutations.

    Returns:
        The calibrated NLL, a float.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> logits = 3.0 * rng.normal(size=(200, 3))
    >>> labels = np.argmax(logits + 2.0 * rng.normal(size=(200, 3)), axis=1)
    >>> round(tfpriors.calibration.calibrated_nll(logits, labels, splits=5, seed=0), 2)
    0.53
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    splits = _validation.positive_int(splits, "splits")
    seed = _validation.seed(seed)
    if len(labels) < 4:
        raise ValueError(
            f"`labels` needs at least 4 examples for split halves; received {len(labels)}."
        )
    logits = _as_logits(values, from_logits)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(splits):
        order = rng.permutation(len(labels))
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        for fit_part, score_part in (halves, halves[::-1]):
            t = _fit_temperature(logits[fit_part], labels[fit_part])
            log_probs = special.log_softmax(logits[score_part] / t, axis=1)
            scores.append(-np.mean(log_probs[np.arange(len(score_part)), labels[score_part]]))
    return float(np.mean(scores))


def deep_ensemble_equivalent(metric_value, ensemble_curve):
    """Deep ensemble equivalent: the ensemble size that matches ``metric_value``.

    ``ensemble_curve`` maps ensemble sizes to a lower-is-better metric of the
    deep ensemble of that size (usually calibrated NLL), e.g. ``{1: 0.21, 2:
    0.17, 4: 0.15}``. The DEE is found by linear interpolation on that curve;
    values better than the largest ensemble or worse than the smallest are
    clipped to the ends of the curve (so a DEE of 1 means "no better than one
    model").

    Args:
        metric_value: the metric (lower is better) of the method to rate.
        ensemble_curve: a dict mapping at least two ensemble sizes to the
            metric of the deep ensemble of that size.

    Returns:
        The DEE, a float between the smallest and the largest size of the curve.

    Example:
    >>> curve = {1: 0.20, 2: 0.17, 4: 0.15}
    >>> tfpriors.calibration.deep_ensemble_equivalent(0.16, curve)
    3.0
    >>> tfpriors.calibration.deep_ensemble_equivalent(0.25, curve)
    1.0
    """
    value = _validation.real_number(metric_value, "metric_value")
    try:
        items = sorted(
            (float(size), float(metric)) for size, metric in dict(ensemble_curve).items()
        )
    except (TypeError, ValueError):
        raise TypeError(
            "`ensemble_curve` must map ensemble sizes to metric values; "
            f"received {ensemble_curve!r}."
        ) from None
    if len(items) < 2 or any(size <= 0 or not np.isfinite(metric) for size, metric in items):
        raise ValueError(
            "`ensemble_curve` needs at least 2 positive sizes with finite "
            f"metric values; received {ensemble_curve!r}."
        )
    sizes, metrics = map(np.array, zip(*items))
    # The metric improves with size; keep its running minimum so that the
    # curve is monotone and the inverse is well defined.
    metrics = np.minimum.accumulate(metrics)
    if value >= metrics[0]:
        return float(sizes[0])
    if value <= metrics[-1]:
        return float(sizes[-1])
    # np.interp needs increasing x: interpolate size as a function of -metric.
    return float(np.interp(-value, -metrics, sizes))


def reliability_diagram(values, labels, path=None, from_logits="auto", bins=15, title=None):
    """Draws a reliability diagram (accuracy vs confidence per bin).

    Returns the matplotlib figure, also written to ``path`` (atomically) when
    given. The bars show the accuracy per confidence bin, the orange marks the
    bin's mean confidence (bar above the mark: underconfident, below:
    overconfident), and the lower panel how many examples fall in each bin.

    Args:
        values: ``(n, num_classes)`` probabilities or logits.
        labels: ``(n,)`` integer class labels.
        path: optional image file to write (its extension picks the format).
        from_logits: ``True`` (logits), ``False`` (probabilities) or
            ``"auto"`` (default: probabilities when every row is a
            probability vector, else logits; see the module docstring).
        bins: number of equal-width confidence bins.
        title: the figure's title; default: the ECE and the accuracy.

    Returns:
        The ``matplotlib.figure.Figure``.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet(np.ones(3), size=100)
    >>> labels = rng.integers(0, 3, size=100)
    >>> figure = tfpriors.calibration.reliability_diagram(probs, labels, "reliability.png")
    >>> len(figure.axes)
    2
    >>> import os
    >>> os.path.exists("reliability.png")
    True
    """
    values, labels, from_logits = _check(values, labels, from_logits)
    bins = _validation.positive_int(bins, "bins")
    probs = np.exp(_log_probs(values, from_logits))
    edges, counts, confidence, hits = _bin_statistics(probs, labels, bins)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8, 5.6))
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centers = (edges[:-1] + edges[1:]) / 2
    width = 1.0 / bins
    shown = counts > 0
    top.bar(centers[shown], hits[shown], width=width * 0.95, color="#1f4e79", label="accuracy")
    # A calibrated bin has its accuracy bar end exactly at this mark.
    top.hlines(
        confidence[shown],
        (centers - width * 0.475)[shown],
        (centers + width * 0.475)[shown],
        colors="#e07b39",
        linewidth=2.5,
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", frameon=False)
    top.set_title(
        title
        or f"ECE {np.sum(counts * np.abs(confidence - hits)) / len(labels):.2%}, "
        f"accuracy {np.mean(probs.argmax(1) == labels):.2%}"
    )
    bottom.bar(centers, counts, width=width * 0.95, color="#8faadc")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    return figure if path is None else save_figure(figure, path, dpi=120)
