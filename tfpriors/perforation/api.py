"""Perforating whole models: chosen rates, greedy cost/benefit rates, mask pictures.

:func:`perforate` copies a model with the convolutions it names perforated at
the given rates; :func:`greedy_perforation` picks the rates from measured costs
and validation losses; :func:`plot_mask` draws a perforated layer's mask.
"""

import dataclasses
import numbers
import time

import keras
import numpy as np

from tfpriors import _validation
from tfpriors._rewrite import check_rewritable, rewrite_model
from tfpriors.graph import chain_after, walk
from tfpriors.io import save_figure
from tfpriors.layers.perforated import PerforatedConv2D
from tfpriors.ops.autotune import quiet_retracing
from tfpriors.perforation.masks import (
    MASK_KINDS,
    PerforationMask,
    _outputs_logits,
    _split_data,
    check_rate,
    impact_scores,
    make_mask,
)

_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
# Layers between a convolution and its pooling that keep positions where they are.
_POSITIONWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.BatchNormalization,
    keras.layers.Dropout,
    keras.layers.Identity,
)


def perforable_layers(model):
    """The convolutions of ``model`` that can be perforated, in model order.

    Conv2D layers with channels-last data, no dilation and one group, and
    PerforatedConv2D layers (which can be re-perforated).

    Args:
        model: a Keras model; nested models are searched too.

    Returns:
        A list of layers.

    Example:
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
    >>> [layer.name for layer in tfpriors.perforation.perforable_layers(model)]
    ['conv1', 'conv2']
    """
    found = []
    for layer in walk(model):
        if isinstance(layer, PerforatedConv2D):
            found.append(layer)
        elif (
            type(layer) is keras.layers.Conv2D
            and layer.data_format == "channels_last"
            and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1
        ):
            found.append(layer)
    return found


def _next_pooling(layer):
    """(pool_size, strides, padding) of the pooling fed by ``layer``, or None.

    The pooling may follow through position-wise layers; None when there is none
    or the output branches.
    """
    found = chain_after(
        layer,
        passes=lambda following: isinstance(following, _POSITIONWISE),
        stops=lambda following: isinstance(following, _POOLING),
        limit=16,
    )
    if found is None:
        return None
    pooling = found[1]
    return pooling.pool_size, pooling.strides, pooling.padding


def _output_hw(layer):
    """``(height, width)`` of a convolution's output."""
    shape = layer.output.shape
    return int(shape[1]), int(shape[2])


def _build_mask(model, layer, kind, rate, data, seed, scores_cache):
    """The mask of ``kind`` for ``layer``, with its pooling or impact scores as needed."""
    pooling = scores = None
    if kind == "structure":
        # Without a pooling layer every position is read once: ties everywhere.
        pooling = _next_pooling(layer) or (1, 1, "valid")
    elif kind == "impact":
        if data is None:
            raise ValueError(
                "`mask='impact'` needs `data=(x, y)`: the impact of each output "
                "position on the loss is measured on it."
            )
        if layer.name not in scores_cache:
            scores_cache[layer.name] = impact_scores(model, layer, data)
        scores = scores_cache[layer.name]
    return make_mask(kind, _output_hw(layer), rate, seed=seed, pooling=pooling, scores=scores)


def _resolve_rates(model, rates):
    """``rates`` as a checked ``{name: rate}`` dict, and the perforable layers by name."""
    layers = {layer.name: layer for layer in perforable_layers(model)}
    if isinstance(rates, numbers.Real) and not isinstance(rates, bool):
        rates = {name: rates for name in layers}
    if not isinstance(rates, dict) or not rates:
        raise TypeError(
            "`rates` must be a dict {conv layer name: rate} or one rate for "
            f"every convolution; received {rates!r}."
        )
    resolved = {}
    for name, rate in rates.items():
        if name not in layers:
            raise ValueError(
                f"`rates` names '{name}', which is not a perforable convolution "
                f"of '{model.name}'; perforable layers: {sorted(layers)}."
            )
        resolved[name] = check_rate(rate, f"rates['{name}']")
    return resolved, layers


def perforate(model, rates, mask="uniform", data=None, seed=0, implementation="auto"):
    """Returns a copy of ``model`` with the named convolutions perforated.

    Each named ``Conv2D`` becomes a :class:`~tfpriors.layers.PerforatedConv2D`
    holding the same ``kernel`` and ``bias``; other layers are copied with
    their weights (through the same rewrite as ``tfpriors.sparsify``).

    Args:
        model: a built Sequential or functional model.
        rates: ``{layer name: rate}`` with rates in ``[0, 1)``, or one rate for
            every perforable convolution.
        mask: ``"uniform"``, ``"grid"``, ``"lattice"``, ``"structure"`` (counts
            windows of the pooling layer that follows each convolution),
            ``"impact"`` (needs ``data``), a :class:`PerforationMask`, or a dict
            of those per layer.
        data: ``(x, y)`` with integer labels; used by ``mask="impact"``.
        seed: seed of the random masks.
        implementation: passed to the new layers (``"auto"``, ``"fused"``,
            ``"reference"``).

    Returns:
        A new, uncompiled model. The original model is not changed.

    Example:
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
    >>> fast = tfpriors.perforation.perforate(model, rates={"conv1": 0.5, "conv2": 0.75},
    ...                                       mask="structure")
    >>> [type(layer).__name__ for layer in fast.layers[:3]]
    ['PerforatedConv2D', 'MaxPooling2D', 'PerforatedConv2D']
    >>> fast.get_layer("conv1").effective_rate, fast.get_layer("conv2").effective_rate
    (0.5, 0.75)
    >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    >>> fast(x).shape
    TensorShape([4, 10])
    """
    check_rewritable(model)
    rates, layers = _resolve_rates(model, rates)
    masks = mask if isinstance(mask, dict) else {name: mask for name in rates}
    if set(masks) != set(rates):
        raise ValueError(
            f"A `mask` dict must name exactly the layers of `rates` "
            f"({sorted(rates)}); received {sorted(masks)}."
        )
    for name, kind in masks.items():
        if not isinstance(kind, PerforationMask):
            _validation.one_of(
                kind, f"mask['{name}']" if isinstance(mask, dict) else "mask", set(MASK_KINDS)
            )
    if data is not None:
        _split_data(data)  # checked whatever the masks, so that it is never dropped silently
    scores_cache = {}
    built = {
        name: _build_mask(
            model,
            layers[name],
            masks[name].lower() if isinstance(masks[name], str) else masks[name],
            rates[name],
            data,
            seed,
            scores_cache,
        )
        for name in rates
    }

    def replace(layer):
        if layer.name not in rates:
            return None
        new_layer = PerforatedConv2D(
            layer.filters,
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            mask=built[layer.name],
            activation=layer.activation,
            use_bias=layer.use_bias,
            kernel_regularizer=layer.kernel_regularizer,
            bias_regularizer=layer.bias_regularizer,
            activity_regularizer=layer.activity_regularizer,
            kernel_constraint=layer.kernel_constraint,
            bias_constraint=layer.bias_constraint,
            implementation=implementation,
            name=layer.name,
            dtype=layer.dtype_policy,
        )

        def set_weights(target, source=layer):
            target.kernel.assign(source.kernel)
            if source.use_bias:
                target.bias.assign(source.bias)

        return new_layer, set_weights

    return rewrite_model(model, replace)


@dataclasses.dataclass
class PerforationReport:
    """What :func:`greedy_perforation` chose and what it measured.

    ``layers`` maps each candidate layer name to its FLOPs, measured forward
    time per rate and validation-loss increase per rate. ``steps`` lists every
    step the search tried, in order, with its measured accuracy and whether it
    was kept; ``stop_reason`` says why the search ended. ``print(report)``
    gives a summary; :meth:`to_dict` a JSON-friendly dict, from which the
    report can be built again.

    Example:
    >>> report = tfpriors.perforation.PerforationReport(
    ...     rates={"conv2": 0.5}, target_speedup=2.0, predicted_speedup=1.6,
    ...     measured_speedup=1.5, accuracy_before=0.98, accuracy_after=0.975,
    ...     loss_before=0.07, loss_after=0.08, layers={}, mask="lattice",
    ...     stop_reason="no step left that saves time within the accuracy budget",
    ... )
    >>> print(report)
    Greedy perforation (lattice masks), target 2.00x, accuracy budget 1.00%
      rates             conv2: 0.5
      speedup           1.60x predicted, 1.50x measured (model forward, median)
      accuracy          98.00% -> 97.50%
      validation loss   0.0700 -> 0.0800
      stopped           no step left that saves time within the accuracy budget
    >>> import json
    >>> saved = json.dumps(report.to_dict())
    >>> tfpriors.perforation.PerforationReport(**json.loads(saved)) == report
    True
    """

    rates: dict
    target_speedup: float
    predicted_speedup: float
    measured_speedup: float
    accuracy_before: float
    accuracy_after: float
    loss_before: float
    loss_after: float
    layers: dict
    mask: str
    max_accuracy_drop: float = 0.01
    stop_reason: str = ""
    steps: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        """The report as a dict of plain values (JSON-friendly)."""
        return dataclasses.asdict(self)

    def __str__(self):
        chosen = ", ".join(f"{name}: {rate:g}" for name, rate in self.rates.items()) or "none"
        return "\n".join(
            [
                f"Greedy perforation ({self.mask} masks), target {self.target_speedup:.2f}x, "
                f"accuracy budget {self.max_accuracy_drop:.2%}",
                f"  rates             {chosen}",
                f"  speedup           {self.predicted_speedup:.2f}x predicted, "
                f"{self.measured_speedup:.2f}x measured (model forward, median)",
                f"  accuracy          {self.accuracy_before:.2%} -> {self.accuracy_after:.2%}",
                f"  validation loss   {self.loss_before:.4f} -> {self.loss_after:.4f}",
                f"  stopped           {self.stop_reason}",
            ]
        )


def _loss_and_accuracy(model, x, y, batch_size):
    """Sparse categorical cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    outputs = keras.ops.convert_to_numpy(model.predict(x, batch_size=batch_size, verbose=0))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=_outputs_logits(model))
    loss = float(keras.ops.convert_to_numpy(loss_fn(y, outputs)))
    return loss, float(np.mean(outputs.argmax(-1) == y))


def _interleaved_medians(fns, repeats):
    """Median seconds of each of ``fns``, run once to warm up, then interleaved."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def _forward(model, inputs):
    """A callable running ``model`` on ``inputs`` (one traced inference function)."""
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    return lambda: function(inputs).numpy()


def _layer_timer(layer, rate, batch, mask_kind, seed, implementation):
    """A callable running one (perforated) copy of ``layer`` on a random batch."""
    import tensorflow as tf

    input_shape = tuple(int(d) for d in layer.input.shape[1:])
    config_mask = mask_kind if mask_kind != "impact" else "uniform"
    copy = PerforatedConv2D(
        layer.filters,
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        rate=rate,
        mask=config_mask,
        seed=seed,
        activation=layer.activation,
        use_bias=layer.use_bias,
        implementation=implementation,
    )
    x = tf.random.normal((batch,) + input_shape)
    copy.build(x.shape)
    call = tf.function(copy.call)
    return lambda: call(x).numpy()


def _candidate_costs(
    model,
    layer,
    steps,
    mask,
    data,
    seed,
    implementation,
    batch_size,
    timing_repeats,
    x,
    y,
    loss_before,
):
    """FLOPs, measured forward seconds and validation-loss increase of ``layer`` per rate."""
    kh, kw = layer.kernel_size
    out_h, out_w = _output_hw(layer)
    flops = out_h * out_w * kh * kw * int(layer.kernel.shape[2]) * layer.filters
    timers = [
        _layer_timer(layer, rate, batch_size, mask, seed, implementation) for rate in [0.0] + steps
    ]
    seconds = _interleaved_medians(timers, timing_repeats)
    loss_increase = [0.0]
    for rate in steps:
        trial = perforate(
            model,
            {layer.name: rate},
            mask=mask,
            data=data,
            seed=seed,
            implementation=implementation,
        )
        loss, _ = _loss_and_accuracy(trial, x, y, batch_size)
        loss_increase.append(loss - loss_before)
    return {
        "flops": int(flops),
        "rates": [0.0] + steps,
        "seconds": seconds,
        "loss_increase": loss_increase,
    }


@quiet_retracing()  # each timed candidate is a new tf.function
def greedy_perforation(
    model,
    validation_data,
    target_speedup=2.0,
    mask=None,
    max_accuracy_drop=0.01,
    rate_steps=(0.25, 0.5, 0.75),
    batch_size=32,
    timing_repeats=15,
    seed=0,
    implementation="auto",
    progress=True,
):
    """Perforates ``model``'s convolutions towards a measured speedup within an accuracy budget.

    1. Cost of every perforable convolution: its FLOPs and its measured
       forward time at each rate in ``rate_steps`` (batch ``batch_size``).
    2. Benefit: the validation-loss increase of perforating each layer alone
       at each rate.
    3. Greedy: starting from no perforation, repeatedly raise one layer to its
       next rate, the step with the least loss increase per second saved
       first. Each step is evaluated on the validation data: a step that
       drops accuracy by more than ``max_accuracy_drop`` is undone and its
       layer stays where it was. The search stops once the predicted speedup
       reaches ``target_speedup`` or no step is left.
    4. The result is timed against ``model`` (interleaved medians): while it is
       not faster, the last steps are undone. The returned model is never
       slower than ``model`` (as measured) and never outside the budget; at
       worst it is an unperforated copy, and ``stop_reason`` says why.

    Args:
        model: a built Sequential or functional classifier (logits or softmax
            output, integer labels).
        validation_data: ``(x_val, y_val)``.
        target_speedup: the forward speedup of the whole model to reach (> 1).
        mask: mask kind of every perforated layer (``"uniform"``, ``"grid"``,
            ``"lattice"``, ``"structure"``, ``"impact"``). Default: ``"impact"``,
            measured on the validation data, which loses the least accuracy.
        max_accuracy_drop: the largest validation-accuracy drop accepted, as a
            fraction (0.01 is one percentage point).
        rate_steps: increasing rates in ``(0, 1)`` each layer may take.
        batch_size: batch of the timings and of the evaluations.
        timing_repeats: timed runs per median.
        seed: seed of the masks.
        implementation: of the perforated layers (see ``PerforatedConv2D``).
        progress: show a tqdm progress bar.

    Returns:
        The perforated model; its :class:`PerforationReport` (chosen rates,
        predicted and measured speedup, accuracy and loss before/after, the
        steps tried and why the search stopped) is its ``perforation_report``
        attribute.

    Example:
    >>> (x, y), (x_val, y_val) = tfpriors.datasets.load_digits(flat=False)
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, name="logits"),
    ... ])
    >>> model.compile(keras.optimizers.Adam(0.01),
    ...               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> _ = model.fit(x[:300], y[:300], epochs=1, verbose=0)
    >>> fast = tfpriors.perforation.greedy_perforation(
    ...     model, (x_val[:32], y_val[:32]), target_speedup=2.0, mask="lattice",
    ...     max_accuracy_drop=0.01, rate_steps=(0.5,), timing_repeats=1, progress=False,
    ... )
    >>> print(fast.perforation_report)  # timings vary from run to run
    Greedy perforation (lattice masks), target 2.00x, accuracy budget 1.00%
      rates             ...
      speedup           ...x predicted, ...x measured (model forward, median)
      accuracy          ...% -> ...%
      validation loss   ... -> ...
      stopped           ...
    >>> report = fast.perforation_report
    >>> set(report.rates) <= {"conv"}
    True
    >>> bool(report.accuracy_before - report.accuracy_after <= 0.01)  # within the budget
    True
    """
    check_rewritable(model)
    target_speedup = _validation.real_number(target_speedup, "target_speedup")
    if target_speedup <= 1.0:
        raise ValueError(f"`target_speedup` must be > 1; received {target_speedup}.")
    mask = _validation.one_of("impact" if mask is None else mask, "mask", set(MASK_KINDS))
    max_accuracy_drop = _validation.real_number(max_accuracy_drop, "max_accuracy_drop", 0.0, 1.0)
    steps = [_validation.real_number(r, "rate_steps", 0.0, 1.0) for r in rate_steps]
    if not steps or steps != sorted(set(steps)) or steps[0] <= 0 or steps[-1] >= 1:
        raise ValueError(
            f"`rate_steps` must be increasing rates in (0, 1); received {rate_steps!r}."
        )
    batch_size = _validation.positive_int(batch_size, "batch_size")
    timing_repeats = _validation.positive_int(timing_repeats, "timing_repeats")
    x, y = _split_data(validation_data)
    candidates = perforable_layers(model)
    if not candidates:
        raise ValueError(f"'{model.name}' has no convolution that can be perforated.")

    import tensorflow as tf
    from tqdm.auto import tqdm

    data = (x, y) if mask == "impact" else None
    bar = tqdm(
        total=len(candidates) + 2, desc="greedy perforation", disable=not progress, leave=False
    )
    loss_before, accuracy_before = _loss_and_accuracy(model, x, y, batch_size)
    timing_x = tf.constant(np.resize(x, (batch_size,) + x.shape[1:]))
    base_forward = _forward(model, timing_x)
    base_time = _interleaved_medians([base_forward], timing_repeats)[0]
    bar.update(1)
    layers = {}
    for layer in candidates:
        layers[layer.name] = _candidate_costs(
            model,
            layer,
            steps,
            mask,
            data,
            seed,
            implementation,
            batch_size,
            timing_repeats,
            x,
            y,
            loss_before,
        )
        bar.update(1)

    def build(rates):
        if not rates:
            return rewrite_model(model, lambda layer: None)
        return perforate(
            model, rates, mask=mask, data=data, seed=seed, implementation=implementation
        )

    # Greedy on the independent estimates, each step checked on the validation data.
    level = {name: 0 for name in layers}
    frozen, tried, accepted = set(), [], []
    saved = 0.0
    stop_reason = "no step left that saves time within the accuracy budget"
    while True:
        if base_time / max(base_time - saved, 1e-12) >= target_speedup:
            stop_reason = "predicted speedup reached the target"
            break
        best = None
        for name, info in layers.items():
            i = level[name]
            if name in frozen or i + 1 >= len(info["rates"]):
                continue
            gain = info["seconds"][i] - info["seconds"][i + 1]
            if gain <= 0:
                continue
            cost = max(info["loss_increase"][i + 1] - info["loss_increase"][i], 0.0)
            if best is None or cost / gain < best[0]:
                best = (cost / gain, name, gain)
        if best is None:
            break
        _, name, gain = best
        rates = {n: layers[n]["rates"][i] for n, i in level.items() if i > 0}
        rates[name] = layers[name]["rates"][level[name] + 1]
        _, accuracy = _loss_and_accuracy(build(rates), x, y, batch_size)
        keep = accuracy_before - accuracy <= max_accuracy_drop + 1e-12
        tried.append({"layer": name, "rate": rates[name], "accuracy": accuracy, "kept": keep})
        if not keep:
            frozen.add(name)
            continue
        level[name] += 1
        saved += gain
        accepted.append((name, gain))

    # Measured, not predicted: undo the last steps while the model is not faster.
    while True:
        chosen = {n: layers[n]["rates"][i] for n, i in level.items() if i > 0}
        result = build(chosen)
        before, after = _interleaved_medians(
            [base_forward, _forward(result, timing_x)], timing_repeats
        )
        if before / after > 1.0 or not accepted:
            break
        name, gain = accepted.pop()
        level[name] -= 1
        saved -= gain
        stop_reason = (
            f"measured slower than the input ({before / after:.2f}x): the last steps were undone"
        )
    if not chosen:
        # The same computation as the input: any measured difference is noise.
        before = after = 1.0
        stop_reason += "; no perforation kept (the input model is returned as a copy)"
    elif before / after < target_speedup and stop_reason.startswith("predicted"):
        stop_reason += f", but the measured speedup is {before / after:.2f}x"
    loss_after, accuracy_after = _loss_and_accuracy(result, x, y, batch_size)
    bar.update(1)
    bar.close()
    result.perforation_report = PerforationReport(
        rates=chosen,
        target_speedup=target_speedup,
        predicted_speedup=float(base_time / max(base_time - saved, 1e-12)),
        measured_speedup=before / after,
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        loss_before=loss_before,
        loss_after=loss_after,
        layers=layers,
        mask=mask,
        max_accuracy_drop=max_accuracy_drop,
        stop_reason=stop_reason,
        steps=tried,
    )
    return result


def plot_mask(layer, path=None, title=None):
    """Draws a perforated layer's mask: kept positions and the region each one fills.

    Args:
        layer: a built :class:`~tfpriors.layers.PerforatedConv2D` (or a
            :class:`PerforationMask`).
        path: optional ``.png`` file to write (atomically).
        title: optional figure title (default: layer name, rate and size).

    Returns:
        The matplotlib figure (written to ``path`` when given).

    Example:
    >>> layer = tfpriors.layers.PerforatedConv2D(4, 3, padding="same", rate=0.5,
    ...                                          mask="lattice", name="conv")
    >>> _ = layer(np.zeros((1, 8, 8, 1), "float32"))  # the mask is built with the layer
    >>> figure = tfpriors.perforation.plot_mask(layer, "mask.png")
    >>> figure.axes[0].get_title()
    'computed positions (32/64)'
    >>> import os
    >>> os.path.exists("mask.png")
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(layer, PerforationMask):
        mask, name = layer, "mask"
    else:
        mask = getattr(layer, "mask", None)
        if not isinstance(mask, PerforationMask):
            raise TypeError(
                "`layer` must be a built PerforatedConv2D or a PerforationMask; "
                f"received {layer!r}."
            )
        name = layer.name
    if path is not None and not str(path).endswith(".png"):
        raise ValueError(f"`path` must end in '.png'; received {path!r}.")
    height, width = mask.output_shape
    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(mask.kept_image(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
    left.set_title(f"computed positions ({len(mask.kept)}/{mask.size})")
    # Each kept position gets a colour; its fill region shares it.
    colours = np.random.default_rng(0).permutation(len(mask.kept))
    regions = colours[mask.fill_index].reshape(height, width)
    right.imshow(regions, cmap="tab20", interpolation="nearest")
    rows, cols = np.divmod(mask.kept, width)
    right.scatter(cols, rows, s=max(2, 400 / max(height, width)), c="black", marker="o")
    right.set_title("nearest-neighbour fill regions")
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title or f"{name}: rate {mask.rate:.2f}, output {height}x{width}")
    figure.tight_layout()
    return figure if path is None else save_figure(figure, path)
