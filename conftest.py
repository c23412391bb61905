"""Doctest set-up: the examples in tfpriors' docstrings run as tests (``make test``).

Every example sees ``np``, ``tf``, ``keras`` and ``tfpriors`` already imported, runs
with fixed seeds in an empty temporary directory (examples that save files leave
nothing behind) and is otherwise self-contained.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_setup(request, tmp_path, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        import tfpriors

        namespace = request.getfixturevalue("doctest_namespace")
        namespace.update(np=np, tf=tf, keras=keras, tfpriors=tfpriors)
        monkeypatch.chdir(tmp_path)
        keras.utils.set_random_seed(0)
        np.set_printoptions(precision=4, suppress=True)
    yield
    if isinstance(request.node, pytest.DoctestItem):
        keras.config.set_dtype_policy("float32")
        np.set_printoptions(precision=8, suppress=False)
