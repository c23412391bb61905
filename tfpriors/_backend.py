"""Refuses, with a clear message, to run on a Keras backend other than TensorFlow."""

import os


def check_backend():
    """Raises ImportError unless Keras runs on (or is set to load) its TensorFlow backend.

    Called once when ``tfpriors`` is imported; the message says how to select the
    TensorFlow backend.
    """
    requested = os.environ.get("KERAS_BACKEND")
    if requested is not None and requested != "tensorflow":
        raise ImportError(
            f"tfpriors needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
            f"{requested!r}. Set KERAS_BACKEND=tensorflow (or unset it) before "
            "importing keras and tfpriors."
        )
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"tfpriors needs the TensorFlow backend of Keras 3, but Keras runs on "
            f"{keras.backend.backend()!r} (from ~/.keras/keras.json or KERAS_BACKEND). "
            "Set KERAS_BACKEND=tensorflow before importing keras and tfpriors."
        )
