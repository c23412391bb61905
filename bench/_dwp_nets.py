"""Data, nets and training loops of bench/dwp.py (font letters -> MNIST sample).

Source task: letters A-J rendered from matplotlib's fonts
(``tfpriors.datasets.load_font_letters``, notMNIST-like). Target task: the
4,000 / 1,000 real MNIST digits of ``tfpriors.datasets.load_mnist_sample``.
Both are 28x28 grey images with 10 classes, so one architecture serves both:
two 3x3 convolutions of ``width`` and ``2 * width`` filters, each followed by
a 2x2 max-pool, then the logits.
"""

import os
import sys

import keras
import numpy as np

import tfpriors

# The training helpers that do not depend on the data are the DWP example's (one copy).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
)
from dwp_digits import (  # noqa: E402, F401
    accuracy_curve,
    compile_classifier,
    copy_source_filters,
    fit_steps,
    restart,
    test_accuracy,
    train_vae,
)

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
WIDTH = 16  # conv1 has WIDTH filters, conv2 2 * WIDTH
# Initial posterior log-variance of the variational convolutions.
LOG_SIGMA2_INIT = -10.0


def load_tasks(letters_per_class, quick_slices=None):
    """``(source, target)``, each ``((x, y), (x_test, y_test))``.

    Args:
        letters_per_class: font letters drawn per class (a fifth of them are
            the source's test set).
        quick_slices: ``None`` for the whole MNIST sample, or
            ``(train, test)`` image counts for a smoke run (stratified slices).
    """
    source = tfpriors.datasets.load_font_letters(num_per_class=letters_per_class, seed=0)
    (xt, yt), (xt_test, yt_test) = tfpriors.datasets.load_mnist_sample()
    if quick_slices is not None:
        xt, yt = subset(xt, yt, quick_slices[0], seed=0)
        xt_test, yt_test = subset(xt_test, yt_test, quick_slices[1], seed=0)
    return source, ((xt, yt), (xt_test, yt_test))


def subset(x, y, size, seed):
    """``size`` examples drawn with the classes as balanced as possible (stratified).

    Classes take turns: every class gives its ``i``-th random member before
    any gives its ``i + 1``-th, so 50 images hold 5 of each digit.
    """
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    order = np.concatenate(
        [
            np.stack([idx[i] for idx in per_class if i < len(idx)])
            for i in range(max(len(idx) for idx in per_class))
        ]
    )
    chosen = rng.permutation(order[:size])
    return x[chosen], y[chosen]


def conv_net(kernel_initializer="he_normal", name=None):
    """The plain source / target net: two 3x3 convolutions with max-pools, then logits.

    ``kernel_initializer``: one initializer for both convolutions, or a dict
    ``{"conv1": ..., "conv2": ...}``.
    """

    def conv(filters, layer_name):
        initializer = kernel_initializer
        if isinstance(initializer, dict):
            initializer = initializer[layer_name]
        return keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            name=layer_name,
            kernel_initializer=initializer,
        )

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            conv(WIDTH, "conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            conv(2 * WIDTH, "conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(NUM_CLASSES, name="logits"),
        ],
        name=name,
    )


def variational_net(prior, name=None):
    """The same architecture with variational layers; ``prior`` on the convolutions.

    ``prior``: one prior for both convolutions, or a ``(conv1, conv2)`` pair
    (a Deep Weight Prior per layer). The logits layer keeps the standard
    normal prior in every variant, so variants differ only in the prior over
    conv kernels. Kernel means start from He initialization, log-variances at
    -10 (the layers' default).
    """
    layer_priors = tuple(prior) if isinstance(prior, (tuple, list)) else (prior, prior)

    def conv(filters, layer_name):
        return tfpriors.layers.VariationalConv2D(
            filters,
            3,
            prior=layer_priors[int(layer_name[-1]) - 1],
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            log_sigma2_initializer=LOG_SIGMA2_INIT,
            name=layer_name,
        )

    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            conv(WIDTH, "conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            conv(2 * WIDTH, "conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            tfpriors.layers.VariationalDense(NUM_CLASSES, prior="normal", name="logits"),
        ],
        name=name,
    )


def train_sources(x, y, count, epochs, seed=0):
    """``count`` plain conv nets trained on the source task (seeds ``seed``, ``seed + 1``, ...)."""
    models = []
    for index in range(count):
        keras.utils.set_random_seed(seed + index)
        model = compile_classifier(conv_net(name=f"source_{index}"))
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        models.append(model)
    return models


def train_variational(prior, x, y, x_test, y_test, steps, seed, model):
    """Test accuracy of a variational net trained on ``(x, y)`` with ``prior`` on its convs.

    ``model``: a compiled variational net with the same prior whose dataset
    size is ``len(x)``; it restarts from a fresh initialization drawn with
    ``seed``, so its traced train step is reused (tracing costs more than a
    short run).
    """
    keras.utils.set_random_seed(seed)
    restart(model, variational_net(prior))
    fit_steps(model, x, y, steps, seed=seed)
    return test_accuracy(model, x_test, y_test)


def init_variants(vaes, sources):
    """Initializations compared on the plain target net: name -> model factory(seed).

    ``vaes``: ``{"conv1": KernelVAE, "conv2": KernelVAE}``, each layer's prior.
    """

    def dwp(seed, noise):
        return conv_net(
            {
                layer: tfpriors.initializers.DWPInitializer(vae, seed=seed, noise=noise)
                for layer, vae in vaes.items()
            }
        )

    return {
        "He": lambda seed: conv_net("he_normal"),
        "source filters": lambda seed: copy_source_filters(
            conv_net(), sources[seed % len(sources)]
        ),
        "DWP": lambda seed: dwp(seed, noise=False),
        "DWP + decoder noise": lambda seed: dwp(seed, noise=True),
    }
