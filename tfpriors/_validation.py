"""Argument checks shared by every public entry point.

Each helper raises a ``ValueError`` (wrong value) or ``TypeError`` (wrong
type) whose message names the argument and what is accepted.
"""

import numbers

import numpy as np

INT32_MAX = 2**31 - 1


def positive_int(value, name, maximum=None):
    """Returns ``value`` as an int, or raises if it is not a positive integer (<= ``maximum``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(
            f"`{name}` must be a positive integer; received {value!r} "
            f"of type {type(value).__name__}."
        )
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be a positive integer <= {maximum}; received {value}.")
    return int(value)


def boolean(value, name):
    """Returns ``value`` as a bool; a Python or NumPy bool only (no 0/1, no strings)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool; received {value!r}.")
    return bool(value)


def positive_number(value, name):
    """Returns ``value`` as a finite float > 0."""
    value = real_number(value, name)
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0; received {value}.")
    return value


def real_number(value, name, minimum=None, maximum=None):
    """Returns ``value`` as a finite float within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(
            f"`{name}` must be a real number; received {value!r} of type {type(value).__name__}."
        )
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number; received {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; received {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}; received {value}.")
    return value


def int_tuple(value, name, length):
    """Returns ``value`` (an int or a sequence of ints) as a tuple of positive ints."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * length
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a positive integer or a tuple of {length} "
            f"positive integers; received {value!r}."
        ) from None
    # At most INT32_MAX: TensorFlow's int32 attributes (strides) abort the process beyond.
    if len(items) != length or any(
        isinstance(v, bool)
        or not isinstance(v, (numbers.Integral, np.integer))
        or not 0 < v <= INT32_MAX
        for v in items
    ):
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of {length} "
            f"positive integers (at most {INT32_MAX}); received {value!r}."
        )
    return tuple(int(v) for v in items)


def sequence(value, name, what):
    """``value`` as a tuple; a string or a non-iterable raises TypeError naming ``name``.

    ``what`` completes "`name` must be ..." in the message.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be {what}; received {value!r}.")
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be {what}; received {value!r}.") from None


def shape(value, name, lengths=None):
    """``value`` as a tuple of positive ints (an array shape without its batch axis).

    ``lengths``: the numbers of entries accepted; any length >= 1 when None.
    """
    what = (
        "a tuple of positive ints"
        if lengths is None
        else f"a tuple of {' or '.join(str(n) for n in lengths)} positive ints"
    )
    items = sequence(value, name, what)
    if not items or (lengths is not None and len(items) not in lengths):
        raise ValueError(f"`{name}` must be {what}; received {value!r}.")
    return int_tuple(items, name, len(items))


def file_path(value, name="path"):
    """Returns ``value`` (a ``str`` or ``os.PathLike``) as a string path."""
    import os

    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a file path (str or os.PathLike); received {value!r} "
            f"of type {type(value).__name__}."
        )
    return os.fspath(value)


def _keras_get(getter, value, name, accepted):
    """``getter(value)`` (a ``keras.*.get``) with an error naming the argument."""
    try:
        return getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"`{name}` must be {accepted}; received {value!r} ({error}).") from None


def activation(value, name="activation"):
    """``keras.activations.get(value)`` with an error naming the argument."""
    import keras

    accepted = "None, a Keras activation or its name (e.g. 'relu'), or a callable"
    return _keras_get(keras.activations.get, value, name, accepted)


def regularizer(value, name):
    """``keras.regularizers.get(value)`` with an error naming the argument."""
    import keras

    accepted = "None, a Keras regularizer or its name (e.g. 'l2'), or a callable"
    return _keras_get(keras.regularizers.get, value, name, accepted)


def constraint(value, name):
    """``keras.constraints.get(value)`` with an error naming the argument."""
    import keras

    accepted = "None, a Keras constraint or its name (e.g. 'non_neg'), or a callable"
    return _keras_get(keras.constraints.get, value, name, accepted)


def seed(value, name="seed"):
    """Returns ``value`` if it is None or a non-negative integer (a random seed)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"`{name}` must be None or a non-negative integer; received {value!r}.")
    if value < 0:
        raise ValueError(f"`{name}` must be None or a non-negative integer; received {value}.")
    return int(value)


def class_labels(labels, name, length, num_classes=None):
    """Returns ``labels`` as an int64 vector of ``length`` class indices."""
    labels = numeric_array(labels, name, dtype="float64")
    if labels.shape != (length,):
        raise ValueError(f"`{name}` must have shape ({length},); received shape {labels.shape}.")
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise ValueError(f"`{name}` must be integer class indices.")
    if length and (labels.min() < 0 or num_classes is not None and labels.max() >= num_classes):
        accepted = f"[0, {num_classes - 1}]" if num_classes is not None else "0 or more"
        raise ValueError(
            f"`{name}` must lie in {accepted}; received values from "
            f"{labels.min():.0f} to {labels.max():.0f}."
        )
    return labels.astype("int64")


def initializer(value, name):
    """``keras.initializers.get(value)`` with an error naming the argument."""
    import keras

    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` must be a Keras initializer or its name; received {value!r} ({error})."
        ) from None


def keras_model(value, name="model"):
    """Returns ``value`` if it is a Keras model."""
    import keras  # here, so that the module stays importable without TensorFlow

    if not isinstance(value, keras.Model):
        raise TypeError(f"`{name}` must be a keras.Model; received {type(value).__name__}.")
    return value


def one_of(value, name, accepted):
    """Returns the lower-cased string ``value`` if it is among ``accepted``."""
    if not isinstance(value, str) or value.lower() not in accepted:
        raise ValueError(f"`{name}` must be one of {sorted(accepted)}; received {value!r}.")
    return value.lower()


def numeric_array(values, name, dtype="float32"):
    """Returns ``values`` as a ``dtype`` array; strings, objects and ragged lists are refused.

    ``dtype=None`` keeps the array's own numeric dtype.
    """
    try:
        raw = np.asarray(values)
    except ValueError:  # ragged nested sequences
        raise ValueError(f"`{name}` must be a rectangular array of numbers.") from None
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be an array of numbers; received dtype {raw.dtype}.")
    return raw if dtype is None else raw.astype(dtype)


def finite_batch(values, name, dtype="float32"):
    """Returns ``values`` as an array after checking it is non-empty and finite."""
    values = numeric_array(values, name, dtype)
    if values.ndim == 0 or len(values) == 0:
        raise ValueError(f"`{name}` is empty.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` contains NaN or inf.")
    return values


def layer_of(model, layer, name="layer"):
    """Returns the layer of ``model`` that ``layer`` names: a layer, its name or its index."""
    import keras

    keras_model(model)
    if isinstance(layer, keras.layers.Layer):
        if not any(candidate is layer for candidate in model.layers):
            raise ValueError(
                f"`{name}` must be a layer of '{model.name}'; "
                f"'{layer.name}' is not one of its layers."
            )
        return layer
    try:
        if isinstance(layer, str):
            return model.get_layer(layer)
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            return model.layers[layer]
    except (ValueError, IndexError):
        pass
    raise ValueError(
        f"`{name}` must be a layer of '{model.name}', its name or its index; "
        f"received {layer!r}; layers: {[each.name for each in model.layers]}."
    )
