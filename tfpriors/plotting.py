"""Pictures of what Sparse VD removed: per-layer sparsity and the first layer's mask.

Uses matplotlib's object-oriented API with the Agg canvas, so it needs no
display and never touches pyplot's global state.
"""

import math

import numpy as np

from tfpriors import _validation
from tfpriors.compression import compression_report
from tfpriors.graph import walk
from tfpriors.io import save_figure
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense, SparseVDLayer
from tfpriors.layers.structured import StructuredBayesianPruning

_KEPT_COLOR = "#1f4e79"
_REMOVED_COLOR = "#e6e9ee"
_CMAP = "Blues"  # white = nothing kept, like the mask's background
_ANNOTATE_MAX_CELLS = 144  # write the numbers into heat-map cells up to 12x12


def sparse_vd_layers(model):
    """Lists the Sparse VD layers of ``model`` (nested ones included), in model order.

    Args:
        model: a Keras model.

    Returns:
        A list of :class:`~tfpriors.layers.SparseVDLayer` layers.

    Example:
    >>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
    >>> [layer.name for layer in tfpriors.plotting.sparse_vd_layers(model)]
    ['fc1', 'fc2', 'fc3']
    """
    return [layer for layer in walk(model) if isinstance(layer, SparseVDLayer)]


def _check_image_shape(input_image_shape, input_dim, layer_name):
    """``input_image_shape``, (height, width) or (height, width, channels), checked."""
    shape = _validation.shape(input_image_shape, "input_image_shape", lengths=(2, 3))
    if math.prod(shape) != input_dim:
        raise ValueError(
            f"`input_image_shape` {shape} has {math.prod(shape)} pixels but the first "
            f"Sparse VD layer '{layer_name}' has {input_dim} inputs; they must match."
        )
    return shape


def _model_image_shape(model, input_dim):
    """The model's input image shape when it has ``input_dim`` pixels, else None.

    A Dense layer right after Flatten(image) sees the image pixels in row-major
    (height, width, channels) order; that shape is used when it fits.
    """
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if len(shape) in (2, 3) and all(d is not None for d in shape) and math.prod(shape) == input_dim:
        return tuple(int(d) for d in shape)
    return None


def _heatmap(fig, ax, values, title, fmt, vmax, label):
    """Draws ``values`` as a heat map with a colour bar, annotated when small."""
    image = ax.imshow(values, cmap=_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if values.size <= _ANNOTATE_MAX_CELLS:
        for (row, col), value in np.ndenumerate(values):
            dark = value > 0.55 * vmax
            ax.text(
                col,
                row,
                fmt(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    return image


def _plot_layer_bars(ax, report):
    """Draws the fraction of weights removed in each layer of ``report``."""
    rows = list(report.layers)
    names = [row.name for row in rows]
    sparsity = np.array([row.sparsity for row in rows]) * 100
    positions = np.arange(len(rows))
    ax.barh(positions, np.full(len(rows), 100.0), color=_REMOVED_COLOR, height=0.6)
    ax.barh(positions, sparsity, color=_KEPT_COLOR, height=0.6)
    for position, row in zip(positions, rows):
        label = (
            f"{row.sparsity:.1%} removed  ·  {row.nonzero:,} of {row.weights:,} kept"
            f"  ·  {row.compression:.0f}x"
        )
        inside = row.sparsity > 0.5
        ax.text(
            2 if inside else row.sparsity * 100 + 2,
            position,
            label,
            va="center",
            ha="left",
            fontsize=8,
            color="white" if inside else "black",
        )
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("weights removed (%)")
    ax.set_title("sparsity per layer", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _plot_units_kept(ax, report):
    """Draws the units / filters a ``StructuredBayesianPruning`` gate keeps per layer."""
    rows = [row for row in report.layers if row.units is not None]
    positions = np.arange(len(rows))
    kept = np.array([100.0 * row.units_kept / row.units for row in rows])
    ax.barh(positions, np.full(len(rows), 100.0), color=_REMOVED_COLOR, height=0.6)
    ax.barh(positions, kept, color=_KEPT_COLOR, height=0.6)
    for position, row, value in zip(positions, rows, kept):
        inside = value > 50
        ax.text(
            2 if inside else value + 2,
            position,
            f"{row.units_kept:,} of {row.units:,} kept",
            va="center",
            ha="left",
            fontsize=8,
            color="white" if inside else "black",
        )
    ax.set_yticks(positions, [row.name for row in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(
        f"units / filters kept (%)  ·  FLOPs kept "
        f"{report.total_flops_kept:,} of {report.total_flops:,}"
    )
    ax.set_title("units kept per layer", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _plot_dense_mask(fig, mask_ax, input_ax, model, layer, input_image_shape):
    """Draws a SparseVDDense layer's mask and its kept weights per input."""
    from matplotlib.colors import ListedColormap

    mask = layer.kept_mask()  # (inputs, units)
    mask = mask.reshape(-1, mask.shape[-1])
    input_dim, units = mask.shape
    alive = mask.any(axis=0)
    live_units = int(np.count_nonzero(alive))
    # Dead units are blank columns; dropping them makes the survivors readable.
    shown = mask[:, alive] if 0 < live_units < units else mask
    mask_ax.imshow(
        shown,
        cmap=ListedColormap([_REMOVED_COLOR, _KEPT_COLOR]),
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="antialiased",
    )
    mask_ax.set_title(
        f"'{layer.name}' kept weights: {int(mask.sum()):,} of {mask.size:,}", fontsize=10
    )
    if shown is mask:
        mask_ax.set_xlabel(f"output unit ({live_units} of {units} alive)")
    else:
        mask_ax.set_xlabel(
            f"the {live_units} output units still alive (of {units}; dead ones hidden)"
        )
    mask_ax.set_ylabel("input")

    per_input = mask.sum(axis=1)
    if input_image_shape is None:
        input_image_shape = _model_image_shape(model, input_dim)
    else:
        input_image_shape = _check_image_shape(input_image_shape, input_dim, layer.name)
    if input_image_shape is None:
        input_ax.bar(np.arange(input_dim), per_input, width=1.0, color=_KEPT_COLOR)
        input_ax.set_xlim(-0.5, input_dim - 0.5)
        input_ax.set_xlabel("input feature")
        input_ax.set_ylabel(f"weights kept (of {units})")
        input_ax.set_title("kept weights per input", fontsize=10)
        return
    counts = per_input.reshape(input_image_shape)
    if counts.ndim == 3:
        counts = counts.sum(axis=-1)
    used = int(np.count_nonzero(counts))
    _heatmap(
        fig,
        input_ax,
        counts,
        f"kept weights per input pixel ({used} of {counts.size} pixels used)",
        lambda v: f"{int(v)}",
        vmax=max(int(counts.max()), 1),
        label=f"weights kept (of {units})",
    )


def _filter_mosaic(fractions):
    """Tiles (kh, kw, filters) into one image with a blank line between filters."""
    kh, kw, filters = fractions.shape
    cols = math.ceil(math.sqrt(filters * kh / kw))
    rows = math.ceil(filters / cols)
    mosaic = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for index in range(filters):
        r, c = divmod(index, cols)
        mosaic[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw] = fractions[
            ..., index
        ]
    return mosaic


def _plot_conv_mask(fig, mask_ax, position_ax, layer):
    """Draws a SparseVDConv2D layer's kept fractions per filter and per kernel position."""
    import matplotlib

    mask = layer.kept_mask()  # (kh, kw, in_channels, filters)
    kh, kw, in_channels, filters = mask.shape
    per_filter = mask.mean(axis=2)  # kept fraction over input channels
    live_filters = int(np.count_nonzero(mask.any(axis=(0, 1, 2))))
    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad="#b8c0cc")  # tile borders
    image = mask_ax.imshow(
        _filter_mosaic(per_filter), cmap=cmap, vmin=0, vmax=1, interpolation="nearest"
    )
    channels = "" if in_channels == 1 else f", mean over {in_channels} input channels"
    mask_ax.set_title(f"'{layer.name}' kept fraction per {kh}x{kw} filter{channels}", fontsize=10)
    mask_ax.set_xlabel(f"{live_filters} of {filters} filters alive")
    mask_ax.set_xticks([])
    mask_ax.set_yticks([])
    fig.colorbar(image, ax=mask_ax, fraction=0.046, pad=0.04, label="kept fraction")
    per_position = mask.mean(axis=(2, 3))
    _heatmap(
        fig,
        position_ax,
        per_position,
        f"kept fraction per kernel position (over {filters} filters"
        + (")" if in_channels == 1 else f" x {in_channels} channels)"),
        lambda v: f"{v:.0%}",
        vmax=1.0,
        label="kept fraction",
    )


def plot_sparsity(model, path=None, input_image_shape=None):
    """Draws a model's Sparse VD sparsity; returns the figure, written to ``path`` if given.

    Three panels: the fraction of weights removed in each layer (with the kept
    counts and compression), the first Sparse VD layer's kept-weight mask, and
    where that layer still looks at its input (a model with
    ``StructuredBayesianPruning`` gates gets a fourth, the units and filters
    kept per layer; one with gates only gets the first and that one):

    - Dense first layer: the mask as an (inputs x units) image (units with no
      weight left are hidden, so the survivors stay readable), and how many
      weights survive per input pixel as an image of ``input_image_shape``
      (taken from the model's input when it is an image the layer sees
      flattened; a bar per input feature otherwise).
    - Conv2D first layer: the kept fraction of every filter's kernel positions
      (over input channels) as a mosaic, and the kept fraction per kernel
      position over all filters.

    Args:
        model: a built Keras model with at least one Sparse VD layer or
            ``StructuredBayesianPruning`` gate.
        path: optional output file, written atomically; its suffix picks the
            format (``.png``, ``.pdf``, ``.svg``; PNG when there is none).
        input_image_shape: ``(height, width)`` or ``(height, width, channels)``
            of the inputs of a Dense first layer, e.g. ``(8, 8)`` for the flat
            digits; channels are summed.

    Returns:
        The ``matplotlib.figure.Figure`` (not attached to pyplot).

    Example:
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     tfpriors.layers.SparseVDDense(16, activation="relu", name="fc1"),
    ...     tfpriors.layers.SparseVDDense(10, name="fc2"),
    ... ])
    >>> figure = tfpriors.plotting.plot_sparsity(model, "sparsity.png", input_image_shape=(8, 8))
    >>> [axis.get_title() for axis in figure.axes[:2]]
    ['sparsity per layer', "'fc1' kept weights: ... of 1,024"]
    >>> import os
    >>> os.path.exists("sparsity.png")
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = sparse_vd_layers(model)
    gated = any(isinstance(layer, StructuredBayesianPruning) for layer in walk(model))
    if not layers and not gated:
        raise ValueError(
            "`model` has no Sparse VD layers (SparseVDDense / SparseVDConv2D) "
            "or StructuredBayesianPruning gates to plot; build it with kind='sparse_vd' "
            "or convert it with `tfpriors.sparsify(model)` or `tfpriors.structured(model)` "
            "first."
        )
    if not all(layer.built for layer in layers):
        raise ValueError(
            "`model` must be built (call it on data or give it an Input) "
            "before its sparsity can be plotted."
        )
    first = layers[0] if layers else None
    if input_image_shape is not None and not isinstance(first, SparseVDDense):
        raise ValueError(
            "`input_image_shape` only applies when the first Sparse VD layer "
            f"is a SparseVDDense; '{first.name}' is a {type(first).__name__}."
        )
    report = compression_report(model)

    # Tall enough for one readable bar per layer in deep models.
    height = max(4.6, 1.6 + 0.28 * len(report.layers))
    fig = Figure(figsize=(16, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ratios = [1.25] + ([1.45, 1.0] if layers else []) + ([1.25] if gated else [])
    grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios)
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(ratios))]
    _plot_layer_bars(axes[0], report)
    if isinstance(first, SparseVDConv2D):
        _plot_conv_mask(fig, axes[1], axes[2], first)
    elif layers:
        _plot_dense_mask(fig, axes[1], axes[2], model, first, input_image_shape)
    if gated:
        _plot_units_kept(axes[-1], report)
    fig.suptitle(
        f"{model.name}: {report.total_compression:.1f}x compression, "
        f"{report.total_sparsity:.2%} of {report.total_weights:,} weights removed",
        fontsize=12,
        fontweight="bold",
    )

    return fig if path is None else save_figure(fig, path)
