"""Perforation masks: which output positions a perforated convolution computes.

A :class:`PerforationMask` is the one index representation shared by the
Keras layer, the pure-TF reference, the fused op and the TFLite export: the
sorted kept output positions (flat indices into ``height * width``) and, for
every output position, its nearest kept position (Euclidean distance on the
output grid), whose value fills it.

Builders (Figurnov et al., PerforatedCNNs, 2016):

* :func:`uniform_mask`: kept positions drawn uniformly without replacement;
* :func:`grid_mask`: pseudo-random grid, positions per axis
  ``ceil(n_axis / n * (i + u))``, ``u ~ U(0, 1)``;
* :func:`lattice_mask`: a regular lattice, every ``s``-th row times every
  ``t``-th column: computed by one strided convolution, the fastest kind;
* :func:`structure_mask`: keeps the positions covered by the most windows
  of the next pooling layer (overlapping pooling reads some positions twice
  or four times);
* :func:`mask_from_scores` of :func:`impact_scores`: keeps the positions whose
  removal would change the loss most, estimated as the mean ``|dL/dy * y|`` over
  channels and data.

:func:`make_mask` builds any of them by name.

Example:
>>> mask = tfpriors.perforation.make_mask("grid", (8, 8), 0.75, seed=0)
>>> mask
PerforationMask(output_shape=(8, 8), kept=16/64, rate=0.750)
>>> mask.kept_image().astype(int)
array([[0, 0, 0, 0, 0, 0, 0, 0],
       [1, 0, 1, 0, 1, 0, 1, 0],
       [0, 0, 0, 0, 0, 0, 0, 0],
       [1, 0, 1, 0, 1, 0, 1, 0],
       [0, 0, 0, 0, 0, 0, 0, 0],
       [1, 0, 1, 0, 1, 0, 1, 0],
       [0, 0, 0, 0, 0, 0, 0, 0],
       [1, 0, 1, 0, 1, 0, 1, 0]])
"""

import numpy as np
from scipy import ndimage

from tfpriors import _validation

MASK_KINDS = ("uniform", "grid", "lattice", "structure", "impact")
# The largest step of a lattice along one axis (rate 1 - 1/(16 * 16) at most).
MAX_LATTICE_STEP = 16


def check_rate(rate, name="rate"):
    """``rate`` as a float in ``[0, 1)``: the fraction of positions not computed.

    The one rate check of the masks, the layer and ``perforate``.

    Args:
        rate: the perforation rate to check.
        name: the caller's name for it, used in the error message.

    Returns:
        ``rate`` as a float.

    Raises:
        ValueError: when ``rate`` is outside ``[0, 1)`` or not finite.
        TypeError: when ``rate`` is not a real number.

    Example:
    >>> tfpriors.perforation.check_rate(0.5)
    0.5
    >>> tfpriors.perforation.check_rate(1, "rates['conv1']")
    Traceback (most recent call last):
    ...
    ValueError: `rates['conv1']` must be in [0, 1) (at least one position is computed); ...
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be the argument's name (a string); received {name!r}.")
    rate = _validation.real_number(rate, name, 0.0, 1.0)
    if rate >= 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1) (at least one position is computed); received {rate}."
        )
    return rate


def kept_count(size, rate):
    """Number of positions kept out of ``size`` at perforation ``rate`` (at least 1).

    Example:
    >>> tfpriors.perforation.kept_count(64, 0.75)
    16
    >>> tfpriors.perforation.kept_count(4, 0.99)
    1
    """
    size = _validation.positive_int(size, "size")
    return max(1, int(round((1.0 - check_rate(rate)) * size)))


def _output_shape(output_shape):
    """``output_shape`` as a ``(height, width)`` tuple of positive ints."""
    return _validation.int_tuple(output_shape, "output_shape", 2)


class PerforationMask:
    """Kept output positions of a perforated convolution and the fill map.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        kept: flat indices (``row * width + col``) of the computed positions;
            distinct, within ``[0, height * width)``; stored sorted.

    Attributes:
        kept: sorted ``int32`` array of kept flat positions, shape ``(K,)``.
        nearest: ``int32`` array ``(height * width,)``: the kept flat position
            whose value fills each output position (itself when kept).
        fill_index: ``int32`` array ``(height * width,)``: index into ``kept``
            of that position (what the gather that fills the output uses).

    Example:
    >>> mask = tfpriors.perforation.PerforationMask((4, 4), [0, 5, 10, 15])
    >>> mask.rate
    0.75
    >>> mask.kept_image()[0]
    array([ True, False, False, False])
    >>> mask.nearest.reshape(4, 4)
    array([[ 0,  0,  5,  5],
           [ 0,  5,  5, 10],
           [ 5,  5, 10, 10],
           [ 5, 10, 10, 15]], dtype=int32)
    >>> tfpriors.perforation.PerforationMask.from_config(mask.get_config()) == mask
    True
    """

    def __init__(self, output_shape, kept):
        self.output_shape = _output_shape(output_shape)
        size = self.size
        try:
            kept = np.asarray(kept)
        except (TypeError, ValueError):
            raise TypeError(f"`kept` must be a sequence of integers; received {kept!r}.") from None
        if kept.ndim != 1 or kept.size == 0:
            raise ValueError(
                f"`kept` must be a non-empty 1-D sequence of flat positions; "
                f"received shape {kept.shape}."
            )
        if not np.issubdtype(kept.dtype, np.integer):
            if not (
                np.issubdtype(kept.dtype, np.floating)
                and np.all(np.isfinite(kept))
                and np.all(kept == np.round(kept))
            ):
                raise TypeError(f"`kept` must hold integers; received dtype {kept.dtype}.")
        kept = kept.astype(np.int64)
        if kept.min() < 0 or kept.max() >= size:
            raise ValueError(
                f"`kept` positions must lie in [0, {size}) for `output_shape` "
                f"{self.output_shape}; received values in "
                f"[{kept.min()}, {kept.max()}]."
            )
        if len(np.unique(kept)) != len(kept):
            raise ValueError("`kept` positions must be distinct.")
        self.kept = np.sort(kept).astype(np.int32)
        self.nearest, self.fill_index = _nearest_maps(self.output_shape, self.kept)

    @property
    def size(self):
        """The number of output positions, ``height * width``."""
        return self.output_shape[0] * self.output_shape[1]

    @property
    def rate(self):
        """The fraction of output positions that are not computed."""
        return 1.0 - len(self.kept) / self.size

    def kept_image(self):
        """Boolean ``(height, width)`` image, True where the output is computed."""
        image = np.zeros(self.size, bool)
        image[self.kept] = True
        return image.reshape(self.output_shape)

    def get_config(self):
        """A JSON-friendly dict that :meth:`from_config` turns back into this mask."""
        return {"output_shape": list(self.output_shape), "kept": self.kept.tolist()}

    @classmethod
    def from_config(cls, config):
        """The mask of a :meth:`get_config` dict."""
        if not isinstance(config, dict) or set(config) != {"output_shape", "kept"}:
            raise ValueError(
                "A PerforationMask config must be a dict with keys "
                f"'output_shape' and 'kept'; received {config!r}."
            )
        return cls(config["output_shape"], config["kept"])

    def __eq__(self, other):
        return (
            isinstance(other, PerforationMask)
            and self.output_shape == other.output_shape
            and np.array_equal(self.kept, other.kept)
        )

    def __hash__(self):
        return hash((self.output_shape, self.kept.tobytes()))

    def __repr__(self):
        return (
            f"PerforationMask(output_shape={self.output_shape}, kept={len(self.kept)}/"
            f"{self.size}, rate={self.rate:.3f})"
        )


def _nearest_maps(output_shape, kept):
    """Nearest kept position (Euclidean on the grid) of every output position."""
    size = output_shape[0] * output_shape[1]
    missing = np.ones(size, bool)
    missing[kept] = False
    # The distance transform of the "missing" image returns, for each position,
    # the coordinates of the nearest zero, i.e. the nearest kept position.
    _, (rows, cols) = ndimage.distance_transform_edt(
        missing.reshape(output_shape), return_indices=True
    )
    nearest = (rows * output_shape[1] + cols).reshape(-1).astype(np.int32)
    fill_index = np.searchsorted(kept, nearest).astype(np.int32)
    return nearest, fill_index


def uniform_mask(output_shape, rate, seed=None):
    """Keeps ``round((1 - rate) * H * W)`` positions drawn uniformly at random.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        rate: perforation rate in ``[0, 1)``.
        seed: seed of the draw (None: a different mask every call).

    Returns:
        A :class:`PerforationMask`.

    Example:
    >>> tfpriors.perforation.uniform_mask((8, 8), 0.5, seed=0).rate
    0.5
    """
    output_shape = _output_shape(output_shape)
    size = output_shape[0] * output_shape[1]
    count = kept_count(size, rate)
    rng = np.random.default_rng(_validation.seed(seed))
    return PerforationMask(output_shape, rng.choice(size, count, replace=False))


def _grid_axis(length, count, rng):
    # ceil(length / count * (i + u)) for i = 0..count-1 is 1-based and strictly
    # increasing since length / count >= 1; shift to 0-based indices.
    u = rng.uniform()
    positions = np.ceil(length / count * (np.arange(count) + u)).astype(np.int64) - 1
    return np.clip(positions, 0, length - 1)


def grid_mask(output_shape, rate, seed=None):
    """A pseudo-random grid: rows ``ceil(H/n*(i+u))`` times columns ``ceil(W/m*(j+v))``.

    ``n * m`` is close to ``(1 - rate) * H * W`` with ``n / H`` close to
    ``m / W`` (on small outputs the rate is approximate: a grid has
    ``n * m`` points); ``u, v ~ U(0, 1)`` are drawn from ``seed``.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        rate: perforation rate in ``[0, 1)``.
        seed: seed of the offsets ``u, v`` (None: different every call).

    Returns:
        A :class:`PerforationMask`.

    Example:
    >>> mask = tfpriors.perforation.grid_mask((8, 8), 0.75, seed=0)
    >>> image = mask.kept_image()
    >>> int(image.sum()), int(image.any(axis=1).sum()), int(image.any(axis=0).sum())
    (16, 4, 4)
    """
    output_shape = _output_shape(output_shape)
    height, width = output_shape
    target = kept_count(height * width, rate)
    best = None
    for rows in range(1, height + 1):
        cols = min(width, max(1, int(round(target / rows))))
        # Relative count error plus imbalance between the axes: a near-square grid
        # with a few positions too many beats exact stripes.
        score = abs(rows * cols - target) / target + abs(rows / height - cols / width)
        if best is None or score < best[0] - 1e-12:
            best = (score, rows, cols)
    _, rows, cols = best
    rng = np.random.default_rng(_validation.seed(seed))
    row_positions = _grid_axis(height, rows, rng)
    col_positions = _grid_axis(width, cols, rng)
    kept = (row_positions[:, None] * width + col_positions[None, :]).reshape(-1)
    return PerforationMask(output_shape, kept)


def lattice_rates(output_shape, max_step=MAX_LATTICE_STEP):
    """``{(row_step, col_step): rate}`` of every lattice on ``output_shape``.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        max_step: the largest step along either axis.

    Returns:
        A dict from step pairs to the rate of that lattice.

    Example:
    >>> rates = tfpriors.perforation.lattice_rates((8, 8), max_step=2)
    >>> rates
    {(1, 1): 0.0, (1, 2): 0.5, (2, 1): 0.5, (2, 2): 0.75}
    """
    height, width = _output_shape(output_shape)
    rates = {}
    max_step = _validation.positive_int(max_step, "max_step")
    for row_step in range(1, min(height, max_step) + 1):
        for col_step in range(1, min(width, max_step) + 1):
            rows = len(range((row_step - 1) // 2, height, row_step))
            cols = len(range((col_step - 1) // 2, width, col_step))
            rates[(row_step, col_step)] = 1.0 - rows * cols / (height * width)
    return rates


def lattice_mask(output_shape, rate):
    """A regular lattice: every ``row_step``-th row times every ``col_step``-th column.

    The lattice is the one whose rate is closest to ``rate`` (ties go to the
    lower rate, then to balanced steps, then to more rows skipped than
    columns): on even sizes rate 0.5 keeps every other row, 0.75 every other
    row and column. Lattice rates are ``1 - 1 / (row_step * col_step)`` up to
    edge effects, so other rates are approximate (0.25 gives 0: the plain
    convolution); the built mask's ``rate`` says what was kept. Each kept
    position sits in the middle of the block it fills. A lattice needs no
    gather: :class:`~tfpriors.layers.PerforatedConv2D` computes it as one
    strided convolution.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        rate: the perforation rate to approach, in ``[0, 1)``.

    Returns:
        A :class:`PerforationMask`.

    Example:
    >>> tfpriors.perforation.lattice_mask((8, 8), 0.5).kept_image()[:2, :3]
    array([[ True,  True,  True],
           [False, False, False]])
    """
    output_shape = _output_shape(output_shape)
    rate = check_rate(rate)
    height, width = output_shape
    rates = lattice_rates(output_shape)
    row_step, col_step = min(
        rates,
        key=lambda steps: (
            round(abs(rates[steps] - rate), 9),
            rates[steps],
            abs(steps[0] - steps[1]),
            -steps[0],
        ),
    )
    rows = np.arange((row_step - 1) // 2, height, row_step)
    cols = np.arange((col_step - 1) // 2, width, col_step)
    return PerforationMask(output_shape, (rows[:, None] * width + cols[None, :]).reshape(-1))


def pooling_counts(output_shape, pool_size, strides=None, padding="valid"):
    """How many windows of a following pooling layer read each output position.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        pool_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints; default ``pool_size``.
        padding: ``"valid"`` or ``"same"``, as the pooling layer's.

    Returns:
        A ``(height, width)`` int array of counts.

    Example:
    >>> tfpriors.perforation.pooling_counts((5, 5), 3, 2)  # 3x3 windows, stride 2
    array([[1, 1, 2, 1, 1],
           [1, 1, 2, 1, 1],
           [2, 2, 4, 2, 2],
           [1, 1, 2, 1, 1],
           [1, 1, 2, 1, 1]])
    """
    output_shape = _output_shape(output_shape)
    pool_size = _validation.int_tuple(pool_size, "pool_size", 2)
    strides = pool_size if strides is None else _validation.int_tuple(strides, "strides", 2)
    padding = _validation.one_of(padding, "padding", {"valid", "same"})
    counts = np.zeros(output_shape, np.int64)
    per_axis = []
    for length, k, s in zip(output_shape, pool_size, strides):
        if padding == "same":
            windows = -(-length // s)
            before = max((windows - 1) * s + k - length, 0) // 2
        else:
            windows = max(0, (length - k) // s + 1)
            before = 0
        axis = np.zeros(length, np.int64)
        for w in range(windows):
            start = w * s - before
            axis[max(start, 0) : max(min(start + k, length), 0)] += 1
        per_axis.append(axis)
    counts += per_axis[0][:, None] * per_axis[1][None, :]
    return counts


def _top_positions(scores, count, seed):
    """Flat indices of the ``count`` highest scores; ties broken at random by ``seed``."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    tie_break = np.random.default_rng(_validation.seed(seed)).permutation(scores.size)
    order = np.lexsort((tie_break, -scores))
    return order[:count]


def structure_mask(
    output_shape, rate, pool_size=3, pool_strides=2, pool_padding="valid", seed=None
):
    """Keeps the positions read by the most windows of the next pooling layer.

    With overlapping pooling (the default 3x3 stride 2 of AlexNet-style nets)
    positions on the window overlaps feed 2 or 4 windows; they are kept first.
    Ties (e.g. non-overlapping pooling, where every count is 1) are broken at
    random from ``seed``.

    Args:
        output_shape: ``(height, width)`` of the convolution's output.
        rate: perforation rate in ``[0, 1)``.
        pool_size: the pooling layer's pool size (int or tuple of 2 ints).
        pool_strides: its strides; None means ``pool_size``.
        pool_padding: its padding, ``"valid"`` or ``"same"``.
        seed: seed of the tie-breaking.

    Returns:
        A :class:`PerforationMask`.

    Example:
    >>> mask = tfpriors.perforation.structure_mask((13, 13), 0.5)
    >>> round(mask.rate, 3)
    0.503
    >>> bool(mask.kept_image()[6, 6])  # read by 4 windows of 3x3 stride-2 pooling
    True
    """
    output_shape = _output_shape(output_shape)
    # Checked under this function's own names before pooling_counts sees them.
    pool_strides = _validation.int_tuple(
        pool_strides if pool_strides is not None else pool_size, "pool_strides", 2
    )
    pool_padding = _validation.one_of(pool_padding, "pool_padding", {"same", "valid"})
    counts = pooling_counts(output_shape, pool_size, pool_strides, pool_padding)
    count = kept_count(counts.size, rate)
    return PerforationMask(output_shape, _top_positions(counts, count, seed))


def mask_from_scores(scores, rate, seed=None):
    """Keeps the positions with the highest ``scores`` (a ``(height, width)`` array).

    Args:
        scores: finite ``(height, width)`` scores, e.g. of :func:`impact_scores`.
        rate: perforation rate in ``[0, 1)``.
        seed: seed of the tie-breaking.

    Returns:
        A :class:`PerforationMask` keeping ``kept_count(height * width, rate)``
        positions.

    Example:
    >>> scores = np.arange(16.0).reshape(4, 4)
    >>> mask = tfpriors.perforation.mask_from_scores(scores, 0.75)
    >>> mask.kept
    array([12, 13, 14, 15], dtype=int32)
    """
    scores = _validation.numeric_array(scores, "scores", np.float64)
    if scores.ndim != 2 or not scores.size or not np.all(np.isfinite(scores)):
        raise ValueError(
            f"`scores` must be a finite (height, width) array; received shape {scores.shape}."
        )
    return PerforationMask(
        scores.shape, _top_positions(scores, kept_count(scores.size, rate), seed)
    )


def impact_scores(model, layer, data, batch_size=128):
    """Mean ``|dL/dy * y|`` over channels and data of ``layer``'s output ``y``.

    The first-order estimate of how much the loss changes when a position's
    output is replaced by zero (Figurnov et al., eq. 3), averaged over the
    given data. ``model`` must have been compiled with a loss, or ``data``
    must be ``(x, y)`` with integer labels of a logits or probability output
    (sparse categorical cross-entropy is then used).

    Args:
        model: a functional or Sequential classifier.
        layer: an inner layer of ``model`` (a convolution), its name or its index.
        data: ``(x, y)``: inputs and integer labels.
        batch_size: examples per gradient computation.

    Returns:
        A ``(height, width)`` NumPy array.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> scores = tfpriors.perforation.impact_scores(model, "conv", (x[:64], y[:64]))
    >>> scores.shape, bool((scores >= 0).all())
    ((8, 8), True)
    >>> tfpriors.perforation.mask_from_scores(scores, 0.5).rate
    0.5
    """
    import keras
    import tensorflow as tf

    layer = _validation.layer_of(model, layer)
    if layer is model.layers[-1]:
        raise ValueError(
            f"`layer` must be an inner layer of '{model.name}' (its impact on "
            f"the loss goes through the layers after it); received the output "
            f"layer '{layer.name}'."
        )
    batch_size = _validation.positive_int(batch_size, "batch_size")
    x, y = _split_data(data)
    # Split the model at the layer's output so that dL/dy is a plain gradient.
    head = keras.Model(model.inputs, layer.output)
    tail = keras.Model(layer.output, model.outputs[0])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=_outputs_logits(model), reduction="sum"
    )
    total = 0.0
    for start in range(0, len(x), batch_size):
        activations = head(tf.constant(x[start : start + batch_size]), training=False)
        with tf.GradientTape() as tape:
            tape.watch(activations)
            loss = loss_fn(
                tf.constant(y[start : start + batch_size]), tail(activations, training=False)
            )
        grads = tape.gradient(loss, activations)
        total += tf.reduce_sum(tf.reduce_mean(tf.abs(grads * activations), axis=-1), axis=0).numpy()
    return total / len(x)


def make_mask(kind, output_shape, rate, seed=None, pooling=None, scores=None):
    """The one factory of masks by kind (used by the layer and by ``perforate``).

    Args:
        kind: one of :data:`MASK_KINDS`, or a :class:`PerforationMask` (returned
            as is after checking its shape).
        output_shape: ``(height, width)`` of the convolution's output.
        rate: perforation rate in ``[0, 1)``.
        seed: seed of the random kinds.
        pooling: ``(pool_size, strides, padding)`` of the pooling layer after the
            convolution, for ``"structure"``; None assumes 3x3 stride-2 pooling.
        scores: ``(height, width)`` impact scores, needed by ``"impact"``.

    Returns:
        A :class:`PerforationMask`.

    Example:
    >>> tfpriors.perforation.make_mask("lattice", (8, 8), 0.75).rate
    0.75
    >>> tfpriors.perforation.make_mask("structure", (8, 8), 0.5, pooling=(2, 2, "valid")).rate
    0.5
    """
    output_shape = _output_shape(output_shape)
    if isinstance(kind, PerforationMask):
        if kind.output_shape != output_shape:
            raise ValueError(
                f"The mask is for outputs of shape {kind.output_shape}, but the "
                f"convolution gives {output_shape}."
            )
        return kind
    kind = _validation.one_of(kind, "kind", set(MASK_KINDS))
    # Checked for every kind, so that an argument the kind does not use is never dropped
    # silently.
    seed = _validation.seed(seed)
    if pooling is not None:
        pooling = _validation.sequence(pooling, "pooling", "a tuple (pool_size, strides, padding)")
        if len(pooling) != 3:
            raise ValueError(
                f"`pooling` must be a tuple (pool_size, strides, padding); received {pooling!r}."
            )
    if scores is not None and kind != "impact":
        raise ValueError(f"`scores` apply to kind='impact' only; received kind={kind!r}.")
    if kind == "uniform":
        return uniform_mask(output_shape, rate, seed=seed)
    if kind == "grid":
        return grid_mask(output_shape, rate, seed=seed)
    if kind == "lattice":
        return lattice_mask(output_shape, rate)
    if kind == "structure":
        pool_size, strides, padding = pooling if pooling is not None else (3, 2, "valid")
        return structure_mask(output_shape, rate, pool_size, strides, padding, seed=seed)
    if scores is None:
        raise ValueError(
            "mask='impact' needs data to measure each position's impact on the loss: use "
            "tfpriors.perforation.perforate(model, rates, mask='impact', data=(x, y)), or "
            "pass a PerforationMask built with tfpriors.perforation.mask_from_scores("
            "tfpriors.perforation.impact_scores(model, layer, (x, y)), rate)."
        )
    return mask_from_scores(scores, rate, seed=seed)


def _split_data(data):
    """``data = (x, y)`` as a finite float32 batch and int64 labels of the same length."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be a tuple (x, y) of inputs and integer labels.")
    x = _validation.finite_batch(data[0], "data[0]")
    y = np.asarray(data[1])
    if len(y) != len(x):
        raise ValueError(f"`data` inputs and labels differ in length: {len(x)} vs {len(y)}.")
    return x, y.astype(np.int64).reshape(-1)


def _outputs_logits(model):
    """True unless the model's last layer ends in a softmax."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    return not (name == "softmax" or type(last).__name__ == "Softmax")
