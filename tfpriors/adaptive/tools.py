"""Modes, evaluated units, ponder maps and FLOPs of models with adaptive blocks."""

import dataclasses

import keras
import numpy as np

from tfpriors import _validation
from tfpriors._rewrite import retrace
from tfpriors.io import save_figure
from tfpriors.layers.adaptive import (
    MODES,
    AdaptiveBlock,
    ProbabilisticACTBlock,
    ResidualUnit,
    adaptive_blocks,
)

__all__ = [
    "set_mode",
    "evaluated_units",
    "ponder_map",
    "flops_report",
    "FlopsReport",
    "adaptive_blocks",
]


def set_mode(model, mode):
    """Switches every probabilistic ACT block of ``model`` to ``mode`` (same weights).

    Args:
        model: a model with :class:`~tfpriors.layers.ProbabilisticACTBlock` layers.
        mode: ``"relaxed"``, ``"discrete"`` or ``"threshold"``.

    Returns:
        The number of blocks switched.

    Raises:
        ValueError: when ``model`` has no probabilistic ACT block.

    Example:
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, kind="pact", widths=(4, 8, 8))
    >>> tfpriors.adaptive.set_mode(model, "threshold")
    3
    >>> sorted({block.mode for block in tfpriors.adaptive.adaptive_blocks(model)})
    ['threshold']
    """
    mode = _validation.one_of(mode, "mode", set(MODES))
    blocks = [b for b in adaptive_blocks(model) if isinstance(b, ProbabilisticACTBlock)]
    if not blocks:
        raise ValueError("`model` has no ProbabilisticACTBlock layers whose mode could be set.")
    for block in blocks:
        block.mode = mode
    # The mode is a Python branch inside traced functions: trace them again.
    retrace(model)
    return len(blocks)


def _block_inputs(model, images):
    blocks = adaptive_blocks(model)
    if not blocks:
        raise ValueError(f"`model` '{model.name}' has no adaptive blocks.")
    images = _validation.finite_batch(images, "images")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [block.input for block in blocks])
    inputs = probe(images, training=False)
    if len(blocks) == 1:
        inputs = [inputs]
    return blocks, images, inputs


def evaluated_units(model, images):
    """Units evaluated per position by each adaptive block at inference.

    Args:
        model: a functional model with adaptive blocks.
        images: ``(n, height, width, channels)`` inputs of the model.

    Returns:
        ``{block name: float array (n, height, width)}`` in model order.

    Example:
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", widths=(4, 8, 8))
    >>> units = tfpriors.adaptive.evaluated_units(model, np.random.rand(2, 8, 8, 1))
    >>> {name: counts.shape for name, counts in units.items()}
    {'stage0_sact': (2, 8, 8), 'stage1_sact': (2, 4, 4), 'stage2_sact': (2, 2, 2)}
    >>> bool(np.all((units["stage0_sact"] >= 1) & (units["stage0_sact"] <= 3)))
    True
    """
    blocks, _, inputs = _block_inputs(model, images)
    return {
        block.name: keras.ops.convert_to_numpy(block.evaluated_units(x))
        for block, x in zip(blocks, inputs)
    }


def ponder_map(model, images, path=None, max_images=8):
    """Draws the units evaluated per position over each image.

    One row per image: the image, then one heat map per adaptive block (its
    own resolution, shown over the image's extent), then their sum, each
    position counted in input pixels (nearest upsampling).

    Args:
        model: a model with adaptive blocks.
        images: ``(n, height, width, channels)`` inputs of the model.
        path: optional PNG file to write (atomically).
        max_images: rows drawn.

    Returns:
        The matplotlib figure (:func:`evaluated_units` gives the numbers).

    Example:
    >>> _, (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", widths=(4, 8, 8))
    >>> figure = tfpriors.adaptive.ponder_map(model, x_test[:3], "ponder.png")
    >>> import os; os.path.exists("ponder.png")
    True
    >>> len(figure.axes)  # 3 rows of 5: the input, 3 blocks, their total
    15
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    max_images = _validation.positive_int(max_images, "max_images")
    images = _validation.finite_batch(images, "images")[:max_images]
    maps = evaluated_units(model, images)
    height, width = images.shape[1:3]

    def upsample(values):
        rows = np.repeat(values, -(-height // values.shape[1]), axis=1)[:, :height]
        return np.repeat(rows, -(-width // values.shape[2]), axis=2)[:, :, :width]

    total = sum(upsample(values) for values in maps.values())
    columns = ["input", *maps, "total"]
    figure = Figure(figsize=(1.6 * len(columns), 1.6 * len(images) + 0.4), dpi=80)
    FigureCanvasAgg(figure)
    blocks = {b.name: b for b in adaptive_blocks(model)}
    for row, image in enumerate(images):
        for col, name in enumerate(columns):
            axis = figure.add_subplot(len(images), len(columns), row * len(columns) + col + 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if name == "input":
                axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray_r")
            elif name == "total":
                axis.imshow(
                    total[row], cmap="magma", vmin=0, vmax=sum(b.num_units for b in blocks.values())
                )
                axis.text(
                    0.5,
                    -0.08,
                    f"{total[row].mean():.1f}",
                    transform=axis.transAxes,
                    ha="center",
                    va="top",
                    fontsize=7,
                )
            else:
                axis.imshow(maps[name][row], cmap="magma", vmin=0, vmax=blocks[name].num_units)
            if row == 0:
                axis.set_title(name, fontsize=7)
    figure.suptitle("evaluated residual units per position", fontsize=9)
    return figure if path is None else save_figure(figure, path)


@dataclasses.dataclass
class FlopsReport:
    """Multiply-adds actually spent per image vs the same ResNet evaluating every unit.

    Made by :func:`flops_report`; ``print(report)`` gives one line per block.

    Attributes:
        blocks: one dict per adaptive block: ``name``, ``num_units``,
            ``mean_units`` (evaluated per position), ``macs`` (spent per image)
            and ``dense_macs`` (every unit at every position).
        macs: multiply-adds spent per image by the whole model.
        plain_macs: multiply-adds per image of the plain ResNet.

    Example:
    >>> report = tfpriors.adaptive.FlopsReport(blocks=[], macs=60.0, plain_macs=100.0)
    >>> report.ratio
    0.6
    >>> report.to_dict()["ratio"]
    0.6
    """

    blocks: list  # dicts: name, num_units, mean_units, macs, dense_macs
    macs: float
    plain_macs: float

    @property
    def ratio(self):
        """Spent over plain: 0.6 means 60% of the plain ResNet's FLOPs."""
        return self.macs / self.plain_macs

    def to_dict(self):
        """The fields and ``ratio`` as a JSON-ready dict."""
        return {
            "blocks": self.blocks,
            "macs": self.macs,
            "plain_macs": self.plain_macs,
            "ratio": self.ratio,
        }

    def __str__(self):
        lines = [
            f"FLOPs (multiply-adds per image): {self.macs:,.0f} of plain {self.plain_macs:,.0f}"
            f" ({self.ratio:.1%})"
        ]
        for row in self.blocks:
            lines.append(
                f"  {row['name']:<20} {row['mean_units']:.2f} / {row['num_units']} units "
                f"per position, {row['macs']:,.0f} of {row['dense_macs']:,.0f}"
            )
        return "\n".join(lines)


def _fixed_macs(layer):
    """Multiply-adds per image of a layer outside adaptive blocks (0 for element-wise)."""
    if isinstance(layer, ResidualUnit):
        out = layer.output.shape
        return layer.macs_per_position(layer.input.shape) * out[1] * out[2]
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape
        return int(np.prod(layer.kernel.shape)) * out[1] * out[2]
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    return 0


def flops_report(model, images):
    """Multiply-adds per image spent by ``model`` on ``images`` vs the plain ResNet.

    Adaptive blocks count a unit at a position only where it is evaluated
    (the paper's accounting), plus their halting heads; the plain figure
    evaluates every unit everywhere and has no halting heads. Top-level
    Conv2D, Dense and :class:`~tfpriors.layers.ResidualUnit` layers count in
    full. A model without adaptive blocks reports ratio 1.

    Args:
        model: a built functional Keras model, usually from
            :func:`tfpriors.models.act_resnet`.
        images: ``(n, height, width, channels)`` inputs to count on.

    Returns:
        A :class:`FlopsReport`.

    Example:
    >>> _, (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, kind="sact", widths=(4, 8, 8))
    >>> report = tfpriors.adaptive.flops_report(model, x_test[:32])
    >>> [row["name"] for row in report.blocks]
    ['stage0_sact', 'stage1_sact', 'stage2_sact']
    >>> print(f"spent {report.ratio:.0%} of the plain ResNet's multiply-adds")
    spent ...% of the plain ResNet's multiply-adds
    >>> plain = tfpriors.models.act_resnet((8, 8, 1), 10, kind="plain", widths=(4, 8, 8))
    >>> tfpriors.adaptive.flops_report(plain, x_test[:32]).ratio
    1.0
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError("`model` must be a built Keras functional model.")
    fixed = sum(
        _fixed_macs(layer) for layer in model.layers if not isinstance(layer, AdaptiveBlock)
    )
    if not adaptive_blocks(model):
        _validation.finite_batch(images, "images")
        return FlopsReport(blocks=[], macs=float(fixed), plain_macs=float(fixed))
    maps = evaluated_units(model, images)
    rows, spent, plain = [], float(fixed), float(fixed)
    for block in adaptive_blocks(model):
        counts = maps[block.name]
        input_shape = block.input.shape
        unit, head, head_per_example = block.macs_per_position(input_shape)
        positions = counts.shape[1] * counts.shape[2]
        heads = np.minimum(counts, block.num_units - 1)
        macs = float(
            unit * counts.sum(axis=(1, 2)).mean()
            + head * heads.sum(axis=(1, 2)).mean()
            + head_per_example * heads.max(axis=(1, 2)).mean()
        )
        dense = float(unit * positions * block.num_units)
        rows.append(
            {
                "name": block.name,
                "num_units": block.num_units,
                "mean_units": float(counts.mean()),
                "macs": macs,
                "dense_macs": dense,
            }
        )
        spent += macs
        plain += dense
    return FlopsReport(blocks=rows, macs=spent, plain_macs=plain)
