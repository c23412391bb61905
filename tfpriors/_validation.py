"""Argument checks shared by every public entry point.

Each helper raises a ``ValueError`` (wrong value) or ``TypeError`` (wrong
type) whose message names the argument and what is accepted.
"""

import numbers

import numpy as np


def positive_int(value, name):
    """Returns ``value`` as an int, or raises if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"`{name}` must be a positive integer; received {value!r} "
                        f"of type {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer; received {value}.")
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
        raise TypeError(f"`{name}` must be a real number; received {value!r} "
                        f"of type {type(value).__name__}.")
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
        raise TypeError(f"`{name}` must be a positive integer or a tuple of {length} "
                        f"positive integers; received {value!r}.") from None
    if len(items) != length or any(
            isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)) or v <= 0
            for v in items):
        raise ValueError(f"`{name}` must be a positive integer or a tuple of {length} "
                         f"positive integers; received {value!r}.")
    return tuple(int(v) for v in items)


def one_of(value, name, accepted):
    """Returns the lower-cased string ``value`` if it is among ``accepted``."""
    if not isinstance(value, str) or value.lower() not in accepted:
        raise ValueError(f"`{name}` must be one of {sorted(accepted)}; received {value!r}.")
    return value.lower()


def finite_batch(values, name, dtype="float32"):
    """Returns ``values`` as an array after checking it is non-empty and finite."""
    values = np.asarray(values, dtype=dtype)
    if values.ndim == 0 or len(values) == 0:
        raise ValueError(f"`{name}` is empty.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` contains NaN or inf.")
    return values
