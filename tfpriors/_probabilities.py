"""Whether class scores are logits or probabilities: the one ``from_logits`` rule.

Every reader of class scores in tfpriors settles it here: the
:mod:`tfpriors.calibration` metrics and :class:`tfpriors.tta.TTAPredictor`
take ``from_logits`` as ``True``, ``False`` or ``"auto"`` (the default); the
classification paths of :mod:`tfpriors.distill` take ``output=`` /
``teacher_output=`` as ``"logits"``, ``"log_probs"``, ``"probs"`` or
``"auto"`` (the default), and read a student by its last layer. The rule:

- A model whose output layer is a softmax (``Dense(..., activation="softmax")``,
  ``Softmax()``, ``Activation("softmax")`` or ``keras.ops.softmax`` at the end
  of a functional model, also inside a nested model and behind ``Dropout``)
  outputs probabilities; one that ends in a layer with a kernel and no
  activation, or in a log-softmax, outputs logits. Otherwise the model is not
  known and its outputs decide.
- An array of scores holds probabilities when *every* row (along the class
  axis) is non-negative and sums to 1 within ``probability_tolerance``;
  anything else is logits (log-probabilities count as logits: their
  softmax is themselves).
- ``"auto"`` reads what the model or, when the model does not tell, the
  rows say. An explicit ``True`` on a softmax model, or on rows that are all
  probability vectors from a model that does not tell, is refused (reading
  probabilities as logits flattens them, with unchanged accuracy, so nothing
  would look wrong); an explicit ``False`` on rows that are not all
  probability vectors is refused too (unless the model ends in a softmax).

Logits that happen to look like probabilities (every row non-negative and
summing to 1) are read as probabilities by ``"auto"``, and an explicit
``True`` on them is refused, unless they come from a model whose last layer
has no activation (then the model decides: logits). Softmax does not change
when a row is shifted by a constant, so such logits are passed as
``values - values.max(axis=-1, keepdims=True)``: the same distribution, and
never probability rows.
"""

import numpy as np

# Row sums of probabilities are 1 within this (or within the float rounding of
# the values' dtype over num_classes terms, when that is larger).
PROBABILITY_TOLERANCE = 1e-3
# Layers that pass their input through unchanged at inference.
_PASS_THROUGH = ("Dropout", "Identity", "ActivityRegularization", "GaussianNoise")


def check_from_logits(value, name="from_logits"):
    """Returns ``value`` (``True``, ``False`` or ``"auto"``) or raises naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value == "auto":
        return value
    error = ValueError if isinstance(value, str) else TypeError
    raise error(
        f'`{name}` must be True (logits), False (probabilities) or "auto" (decided '
        f"from the model or the values); received {value!r}."
    )


def probability_tolerance(dtype, num_classes):
    """How far from 1 a row sum of ``num_classes`` probabilities of ``dtype`` may be."""
    try:
        itemsize = np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).itemsize
    except TypeError:
        itemsize = 8
    # Machine epsilon of half (bfloat16, the coarser), single and double floats.
    eps = {2: 2.0**-7, 4: 2.0**-23}.get(itemsize, 2.0**-52)
    return max(PROBABILITY_TOLERANCE, num_classes * eps)


def probability_rows(values, axis=-1, dtype=None):
    """Whether every row of ``values`` along ``axis`` is a probability vector.

    Args:
        values: a NumPy array of finite scores.
        axis: the class axis.
        dtype: the dtype the scores were computed in (sets the tolerance of
            the row sums); default ``values.dtype``.

    Returns:
        ``True`` when ``values`` is not empty, has no negative entry and each
        row sums to 1 within :func:`probability_tolerance`.
    """
    values = np.asarray(values)
    if values.size == 0 or values.ndim == 0:
        return False
    tolerance = probability_tolerance(values.dtype if dtype is None else dtype, values.shape[axis])
    return bool(values.min() >= 0 and np.all(np.abs(values.sum(axis=axis) - 1.0) <= tolerance))


def _output_history(model):
    """The Keras history (operation, node) of the model's single output, or None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):  # subclassed, or a Sequential not built yet
        return None
    if not outputs or len(outputs) != 1:
        return None
    return getattr(outputs[0], "_keras_history", None)


def model_output_kind(model):
    """What a model outputs by its last layer: ``"probabilities"``, ``"logits"`` or None.

    Args:
        model: a Keras model or layer (anything else is not known).

    Returns:
        ``"probabilities"`` for a softmax at the end (see the module
        docstring), ``"logits"`` for a log-softmax or a layer with a kernel
        and no activation at the end, else ``None`` (not known from the
        model: its outputs decide).
    """
    import keras  # here, so that the module stays importable without TensorFlow

    for _ in range(64):  # nested models and pass-through layers, with a bound
        if isinstance(model, keras.Model):
            history = _output_history(model)
            if history is None:
                layers = model.layers if isinstance(model, keras.Sequential) else []
                operation = layers[-1] if layers else None
            else:
                operation = history.operation
        elif isinstance(model, keras.layers.Layer):
            operation, history = model, None
        else:
            return None
        # Dropout and friends: look at what feeds them.
        kind = _operation_kind(operation, keras)
        while kind == "pass" and history is not None:
            try:
                inputs = operation._inbound_nodes[history.node_index].input_tensors
            except (AttributeError, IndexError):
                return None
            history = getattr(inputs[0], "_keras_history", None) if len(inputs) == 1 else None
            if history is None:
                return None
            operation = history.operation
            kind = _operation_kind(operation, keras)
        if kind != "model":
            return kind if kind != "pass" else None
        model = operation
    return None


def _operation_kind(operation, keras):
    if isinstance(operation, keras.Model):
        return "model"
    name = type(operation).__name__
    if name == "Softmax":  # the layer and the op of keras.ops.softmax
        return "probabilities"
    if name == "LogSoftmax":
        return "logits"
    activation = getattr(getattr(operation, "activation", None), "__name__", None)
    if activation == "softmax":
        return "probabilities"
    if activation == "log_softmax":
        return "logits"
    if name in _PASS_THROUGH or (name == "Activation" and activation == "linear"):
        return "pass"
    if activation == "linear" and hasattr(operation, "kernel"):
        return "logits"
    return None


def check_model(model, from_logits, name="from_logits", model_name="model"):
    """What ``model`` outputs as far as its last layer tells; refuses a contradiction.

    Args:
        model: a Keras model or layer, or another callable.
        from_logits: ``True``, ``False`` or ``"auto"`` (checked).
        name: the argument name to report.
        model_name: how to call the model in messages.

    Returns:
        The :func:`model_output_kind` of ``model`` (or None).

    Raises:
        ValueError: for ``from_logits=True`` on a model that ends in a softmax.
    """
    from_logits = check_from_logits(from_logits, name)
    kind = model_output_kind(model)
    if from_logits is True and kind == "probabilities":
        raise ValueError(
            f"`{name}=True`, but {model_name} {getattr(model, 'name', '')!r} ends in a "
            "softmax, so it outputs probabilities, not logits; reading them as "
            f'logits would flatten them. Pass `{name}=False` or `{name}="auto"`.'
        )
    return kind


def resolve(values, from_logits, name="from_logits", axis=-1, dtype=None, kind=None):
    """Decides whether ``values`` are read as logits (``True``) or probabilities (``False``).

    The rule is the module's: with ``from_logits="auto"`` a known ``kind`` of
    model output decides, else the rows do (all probability vectors:
    probabilities; anything else: logits).

    Args:
        values: a NumPy array of finite class scores.
        from_logits: ``True``, ``False`` or ``"auto"``.
        name: the argument name to report.
        axis: the class axis.
        dtype: the dtype the scores were computed in (see :func:`probability_rows`).
        kind: what the model producing ``values`` outputs, from
            :func:`model_output_kind`, when known.

    Returns:
        ``True`` to read ``values`` as logits, ``False`` as probabilities.

    Raises:
        ValueError: for ``from_logits=True`` on rows that are all probability
            vectors (or on a softmax model's output), and for
            ``from_logits=False`` on rows that are not.
    """
    from_logits = check_from_logits(from_logits, name)
    if kind == "probabilities" and from_logits is not True:
        return False
    if kind == "logits" and from_logits is not False:
        return True
    values = np.asarray(values)
    probabilities = probability_rows(values, axis=axis, dtype=dtype)
    if from_logits == "auto":
        return not probabilities
    if from_logits and probabilities:
        raise ValueError(
            f"`{name}=True`, but every row of the scores is a probability vector "
            "(non-negative, summing to 1): these are probabilities, and reading "
            f'them as logits would flatten them. Pass `{name}=False` or `{name}="auto"`. '
            "If they really are logits, shift each row by a constant first (softmax "
            "does not change): `values - values.max(axis=-1, keepdims=True)`."
        )
    if not from_logits and not probabilities:
        tolerance = probability_tolerance(
            values.dtype if dtype is None else dtype, values.shape[axis]
        )
        sums = values.sum(axis=axis)
        raise ValueError(
            f"`{name}=False`, but the scores are not probabilities: each row must "
            f"be non-negative and sum to 1 (within {tolerance:g}); found a smallest "
            f"value of {float(values.min()):.4g} and row sums from "
            f"{float(sums.min()):.4g} to {float(sums.max()):.4g}. Pass `{name}=True` "
            f'for logits or `{name}="auto"`.'
        )
    return from_logits
