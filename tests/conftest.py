"""Test set-up: TensorFlow backend, two logical CPUs, fixed seeds."""

import os
import shutil

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices let MirroredStrategy tests run on one machine. This
# must happen before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # devices already initialised by an earlier import
    pass


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def digits():
    import tfpriors

    return tfpriors.datasets.load_digits()


@pytest.fixture
def fused_op():
    """The compiled op module. Without it: a failure when a C++ compiler exists (the op
    should have been built by `make test`), a skip only when none does."""
    import tfpriors

    module = tfpriors.ops.fused_op_module()
    if module is not None:
        return module
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler):
        pytest.fail(
            f"the compiled op is unavailable although a C++ compiler ({compiler}) "
            f"exists: {tfpriors.ops.library.load_error()}"
        )
    pytest.skip(f"no C++ compiler ({compiler}): the compiled op cannot be built here")
