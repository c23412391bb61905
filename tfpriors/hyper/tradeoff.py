"""Accuracy against the fraction of weights removed, for several lambdas of one hypernetwork."""

import dataclasses

import numpy as np

from tfpriors import _validation
from tfpriors.hyper.model import LambdaHyperModel, validate_prune_fraction
from tfpriors.io import save_figure
from tfpriors.layers.hyper import validate_lambda

DEFAULT_FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)


@dataclasses.dataclass
class TradeoffCurve:
    """What :func:`tradeoff_curve` measured.

    ``accuracy[i][j]`` is the test accuracy of ``model.at(lambdas[i],
    prune_fraction=fractions[j])``; ``path`` is the PNG written (or None).

    Attributes:
        lambdas: the lambda values, one curve each.
        fractions: the fractions of kernel weights removed.
        accuracy: one list of accuracies (in [0, 1]) per lambda, one entry per fraction.
        path: the PNG written, or ``None``.

    Example:
    >>> curve = tfpriors.hyper.TradeoffCurve(lambdas=[0.1, 1.0], fractions=[0.0, 0.9],
    ...                                      accuracy=[[0.97, 0.95], [0.96, 0.96]])
    >>> print(curve)
    accuracy by fraction of weights removed
    lambda       0%    90%
    0.1        97.0%  95.0%
    1          96.0%  96.0%
    >>> curve.to_dict()["path"] is None
    True
    """

    lambdas: list
    fractions: list
    accuracy: list
    path: str = None

    def to_dict(self):
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def __str__(self):
        header = "lambda   " + " ".join(f"{f:>6.0%}" for f in self.fractions)
        rows = [
            f"{lam:<8g} " + " ".join(f"{a:>6.1%}" for a in accs)
            for lam, accs in zip(self.lambdas, self.accuracy)
        ]
        return "\n".join(["accuracy by fraction of weights removed", header, *rows])


def accuracy_of(model, x, y, batch_size=1024):
    """Top-1 accuracy of a plain model on ``(x, y)`` (logits or probabilities)."""
    correct = 0
    for start in range(0, len(x), batch_size):
        outputs = np.asarray(model(x[start : start + batch_size], training=False))
        correct += int(
            np.sum(outputs.reshape(len(outputs), -1).argmax(1) == y[start : start + batch_size])
        )
    return correct / len(x)


def _checked_lambdas(lambdas, lambda_range):
    if isinstance(lambdas, (str, bytes)) or np.ndim(lambdas) != 1 or len(lambdas) == 0:
        raise ValueError(f"`lambdas` must be a non-empty list of numbers; received {lambdas!r}.")
    return [validate_lambda(value, lambda_range, name="lambdas") for value in lambdas]


def plot_tradeoff(curve, path=None, title=None, baseline=None):
    """Draws accuracy vs fraction of weights removed, one line per lambda.

    ``baseline``, when given, is another :class:`TradeoffCurve` (for example
    separately trained models) drawn dashed in the same colours. Returns the
    matplotlib figure, also written to ``path`` (atomically) when given.

    Args:
        curve: the :class:`TradeoffCurve` to draw.
        path: optional PNG file to write.
        title: the axes' title; a default one when ``None``.
        baseline: optional :class:`TradeoffCurve` drawn dashed.

    Returns:
        The matplotlib figure.

    Example:
    >>> curve = tfpriors.hyper.TradeoffCurve(lambdas=[0.1, 1.0], fractions=[0.0, 0.5, 0.9],
    ...                                      accuracy=[[0.97, 0.96, 0.90], [0.96, 0.96, 0.94]])
    >>> figure = tfpriors.hyper.plot_tradeoff(curve, "tradeoff.png")
    >>> import os; os.path.exists("tradeoff.png")
    True
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['lambda = 0.1', 'lambda = 1']
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(len(curve.lambdas))]
    for color, lam, accs in zip(colors, curve.lambdas, curve.accuracy):
        ax.plot(
            np.array(curve.fractions) * 100,
            np.array(accs) * 100,
            "o-",
            color=color,
            label=f"lambda = {lam:g}",
            markersize=4,
        )
    if baseline is not None:
        for color, lam, accs in zip(colors, baseline.lambdas, baseline.accuracy):
            ax.plot(
                np.array(baseline.fractions) * 100,
                np.array(accs) * 100,
                "s--",
                color=color,
                alpha=0.6,
                markersize=3,
            )
        ax.plot([], [], "k-", label="hypernetwork")
        ax.plot([], [], "k--", alpha=0.6, label="separate models")
    ax.set_xlabel("weights removed (%, lowest mu^2 / sigma^2 first)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy vs removed weights, one hypernetwork", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig if path is None else save_figure(fig, path)


def tradeoff_curve(model, data, lambdas, path="tradeoff.png", fractions=DEFAULT_FRACTIONS):
    """Accuracy against the fraction of weights removed, one curve per lambda.

    For each lambda and fraction, ``model.at(lambda, prune_fraction=fraction)``
    is scored on ``data``; the curves go into a PNG at ``path``.

    Args:
        model: a trained :class:`LambdaHyperModel`.
        data: ``(x_test, y_test)`` with integer labels.
        lambdas: lambda values inside the model's ``lambda_range``.
        path: the PNG to write (atomically), or ``None`` for numbers only.
        fractions: fractions in [0, 1) of kernel weights removed.

    Returns:
        A :class:`TradeoffCurve`.

    Example:
    >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> model = tfpriors.hyper.LambdaHyperModel(
    ...     [tfpriors.layers.HyperVariationalDense(16, activation="relu"),
    ...      tfpriors.layers.HyperVariationalDense(10)], lambda_range=(1e-3, 10.0))
    >>> model.build((None, 64))  # untrained here; use a model fit on (x, y)
    >>> curve = tfpriors.hyper.tradeoff_curve(model, (x_test, y_test),
    ...                                       lambdas=[0.001, 0.1, 10], path="tradeoff.png")
    >>> curve.lambdas, curve.fractions
    ([0.001, 0.1, 10.0], [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95])
    >>> all(0.0 <= a <= 1.0 for row in curve.accuracy for a in row)
    True
    >>> print(curve)
    accuracy by fraction of weights removed
    lambda        0%    20%    40%    60%    80%    90%    95%
    0.001      ...%  ...%
    ...
    """
    if not isinstance(model, LambdaHyperModel):
        raise TypeError(
            f"`model` must be a tfpriors.hyper.LambdaHyperModel; received {type(model).__name__}."
        )
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be a pair (x_test, y_test).")
    x = _validation.finite_batch(data[0], "data[0]")
    y = np.asarray(data[1]).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"`data` has {len(x)} inputs but {len(y)} labels.")
    lambdas = _checked_lambdas(lambdas, model.lambda_range)
    if isinstance(fractions, (str, bytes)) or np.ndim(fractions) != 1 or len(fractions) == 0:
        raise ValueError(f"`fractions` must be a non-empty list; received {fractions!r}.")
    fractions = [validate_prune_fraction(f, "fractions") for f in fractions]
    if path is not None and not _validation.file_path(path).endswith(".png"):
        raise ValueError(f"`path` must end in '.png' (or be None); received {path!r}.")
    accuracy = [
        [accuracy_of(model.at(lam, prune_fraction=f or None), x, y) for f in fractions]
        for lam in lambdas
    ]
    curve = TradeoffCurve(lambdas=lambdas, fractions=fractions, accuracy=accuracy)
    if path is not None:
        plot_tradeoff(curve, path)
        curve.path = str(path)
    return curve
