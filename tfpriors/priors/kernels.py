"""Kernel slices of trained networks, and pictures of them beside a KernelVAE's samples."""

import math

import keras
import numpy as np

from tfpriors import _validation
from tfpriors.graph import walk
from tfpriors.io import save_figure
from tfpriors.priors.kernel_vae import check_vae


def _conv_kernel(layer):
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) != 4:
        return None
    return keras.ops.convert_to_numpy(kernel)


def collect_kernels(source_models, kernel_size=3):
    """All ``k x k`` slices of the 2D conv kernels of ``source_models``, as ``(n, k, k)`` float32.

    A kernel ``(k, k, in_channels, filters)`` gives ``in_channels * filters``
    slices. Every layer with a 4-D ``kernel`` counts (Conv2D, tfpriors'
    variational and Sparse VD convolutions, nested models included); kernels
    of other sizes are skipped.

    Args:
        source_models: a Keras model or layer, or a list of them.
        kernel_size: the side ``k`` of the slices to collect.

    Returns:
        A float32 NumPy array ``(n, kernel_size, kernel_size)``.

    Raises:
        ValueError: when the models have no built ``kernel_size`` convolution.

    Example:
    >>> model_a = keras.Sequential([
    ...     keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3), keras.layers.Conv2D(32, 3)])
    >>> model_b = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3), keras.layers.Conv2D(8, 5)])
    >>> kernels = tfpriors.priors.collect_kernels([model_a, model_b], kernel_size=3)
    >>> kernels.shape  # 1 * 16 + 16 * 32 + 3 * 8 slices; the 5x5 kernel is skipped
    (552, 3, 3)
    """
    kernel_size = _validation.positive_int(kernel_size, "kernel_size")
    if isinstance(source_models, keras.layers.Layer):
        source_models = [source_models]
    try:
        source_models = list(source_models)
    except TypeError:
        raise TypeError(
            "`source_models` must be a Keras model or a list of Keras models; "
            f"received {type(source_models).__name__}."
        ) from None
    if not source_models:
        raise ValueError("`source_models` is empty; pass at least one trained model.")
    slices, sizes = [], set()
    for model in source_models:
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                "`source_models` must hold Keras models or layers; received "
                f"{type(model).__name__}."
            )
        for layer in walk(model, include_self=True):
            kernel = _conv_kernel(layer)
            if kernel is None:
                continue
            sizes.add(kernel.shape[:2])
            if kernel.shape[:2] == (kernel_size, kernel_size):
                slices.append(
                    np.transpose(kernel, (2, 3, 0, 1)).reshape(-1, kernel_size, kernel_size)
                )
    if not slices or sum(len(s) for s in slices) == 0:
        found = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)) or "none"
        raise ValueError(
            f"`source_models` have no {kernel_size}x{kernel_size} conv kernels "
            f"(`kernel_size`={kernel_size}; kernel sizes found: {found}). Build "
            "the models (call them once) and pass a matching `kernel_size`."
        )
    return np.concatenate(slices).astype("float32")


def _mosaic(kernels, columns):
    count, k = len(kernels), kernels.shape[1]
    rows = math.ceil(count / columns)
    image = np.full((rows * (k + 1) - 1, columns * (k + 1) - 1), np.nan)
    for index, kernel in enumerate(kernels):
        r, c = divmod(index, columns)
        image[r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = kernel
    return image


def plot_kernels(vae, real_kernels, path=None, num_kernels=64, seed=0):
    """Draws KernelVAE samples (decoder means at ``z ~ N(0, I)``) beside real kernels.

    Both panels share one colour scale, so a VAE whose samples are too flat
    or too sharp shows it at a glance.

    Args:
        vae: a trained :class:`KernelVAE`.
        real_kernels: ``(n, k, k)`` slices, e.g. from :func:`collect_kernels`.
        path: optional output image file, written atomically (``.png`` unless its
            suffix says otherwise).
        num_kernels: how many kernels each panel shows (a random subset of the real ones).
        seed: seed of the subset and of the samples.

    Returns:
        The ``matplotlib.figure.Figure`` (not attached to pyplot).

    Example:
    >>> source = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3)])
    >>> kernels = tfpriors.priors.collect_kernels([source])
    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3)  # untrained here: see KernelVAE
    >>> figure = tfpriors.priors.plot_kernels(vae, kernels, "kernels.png", num_kernels=16)
    >>> import os
    >>> os.path.exists("kernels.png")
    True
    >>> len(figure.axes)  # the two panels and their colour bar
    3
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vae = check_vae(vae)
    num_kernels = _validation.positive_int(num_kernels, "num_kernels")
    k = vae.kernel_size
    real_kernels = _validation.finite_batch(real_kernels, "real_kernels")
    if real_kernels.ndim != 3 or real_kernels.shape[1:] != (k, k):
        raise ValueError(
            f"`real_kernels` must have shape (n, {k}, {k}) to match the VAE's "
            f"kernel_size={k}; received {real_kernels.shape}."
        )
    seed = _validation.seed(seed)
    rng = np.random.default_rng(seed)
    shown = min(num_kernels, len(real_kernels))
    real = real_kernels[rng.choice(len(real_kernels), shown, replace=False)]
    samples = vae.sample(num_kernels, seed=keras.random.SeedGenerator(seed))
    limit = float(np.percentile(np.abs(np.concatenate([real.ravel(), samples.ravel()])), 99))
    limit = limit or 1.0
    columns = math.ceil(math.sqrt(num_kernels))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    fig = Figure(figsize=(9, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, kernels, title in (
        (axes[0], samples, "KernelVAE samples (decoder mean, z ~ N(0, I))"),
        (axes[1], real, f"real {k}x{k} kernels of the source nets"),
    ):
        image = ax.imshow(
            _mosaic(kernels, columns), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest"
        )
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), fraction=0.025, pad=0.02, label="weight")
    return fig if path is None else save_figure(fig, path, dpi=90)
