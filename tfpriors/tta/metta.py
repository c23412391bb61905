"""MeTTA: mean embeddings over test-time augmentations, and a linear probe to judge them.

The embedding of an image is the mean, over ``num_samples`` augmentations,
of the activations of one layer of a trained model (no change to training).

Example:
>>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
>>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
>>> tfpriors.tta.mean_embeddings(model, "features", x[:50], num_samples=4).shape
(50, 64)
"""

import keras
import numpy as np

from tfpriors import _validation
from tfpriors.tta.policy import Policy


def _feature_model(model, layer):
    target = _validation.layer_of(model, layer)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, target.output)


def mean_embeddings(model, layer, x, policy=None, num_samples=32, batch_size=256, seed=0):
    """Mean activation of ``layer`` over ``num_samples`` augmentations of each input.

    Args:
        model: a built functional or Sequential model.
        layer: the layer's name or index.
        x: inputs, ``(n, height, width, channels)`` in [0, 1].
        policy: a :class:`Policy` (default: ``Policy.flip_crop()``); with
            ``Policy.identity()`` the result is the central embedding.
        num_samples: augmentations averaged per input.
        batch_size: inputs per model call (times ``num_samples``).
        seed: seed of the augmentations.

    Returns:
        ``(n, features)`` float32 array (the layer's output flattened per input).

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
    >>> embeddings = tfpriors.tta.mean_embeddings(
    ...     model, "features", x[:100], tfpriors.tta.Policy.flip_crop(), num_samples=8)
    >>> embeddings.shape, embeddings.dtype.name
    ((100, 64), 'float32')
    >>> central = tfpriors.tta.mean_embeddings(
    ...     model, "features", x[:100], tfpriors.tta.Policy.identity(), num_samples=1)
    >>> features = keras.Model(model.inputs[0], model.get_layer("features").output)
    >>> bool(np.allclose(central, features(x[:100]), atol=1e-5))
    True
    """
    features = _feature_model(model, layer)
    policy = policy or Policy.flip_crop()
    if not isinstance(policy, Policy):
        raise TypeError(
            f"`policy` must be a tfpriors.tta.Policy; received {type(policy).__name__}."
        )
    num_samples = _validation.positive_int(num_samples, "num_samples")
    batch_size = _validation.positive_int(batch_size, "batch_size")
    seed = _validation.seed(seed)
    x = _validation.finite_batch(x, "x")
    if x.ndim != 4:
        raise ValueError(
            f"`x` must be images (n, height, width, channels); received shape {x.shape}."
        )
    generator = keras.random.SeedGenerator(seed)
    rng = np.random.default_rng(seed)
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        augmented = np.concatenate(
            [
                keras.ops.convert_to_numpy(policy.augment(batch, draw=s, seed=generator, rng=rng))
                for s in range(num_samples)
            ]
        )
        activations = keras.ops.convert_to_numpy(features(augmented, training=False))
        activations = activations.reshape(num_samples, len(batch), -1)
        outputs.append(activations.mean(axis=0))
    return np.concatenate(outputs).astype("float32")


def _probe_split(embeddings, labels, part):
    embeddings = _validation.finite_batch(embeddings, f"{part}_embeddings", dtype="float64")
    if embeddings.ndim != 2:
        raise ValueError(
            f"`{part}_embeddings` must have shape (n, features); received {embeddings.shape}."
        )
    return embeddings, _validation.class_labels(labels, f"{part}_labels", len(embeddings))


def linear_probe(train_embeddings, train_labels, test_embeddings, test_labels, c=1.0):
    """Test accuracy of a logistic regression fitted on embeddings (their quality).

    The embeddings are standardised, then scikit-learn's ``LogisticRegression``
    is fitted on the training ones and scored on the test ones.

    Args:
        train_embeddings: ``(n_train, features)`` embeddings to fit on.
        train_labels: their integer labels (at least two classes).
        test_embeddings: ``(n_test, features)`` embeddings to score.
        test_labels: their integer labels.
        c: inverse regularisation strength of the logistic regression (> 0).

    Returns:
        The test accuracy, a float in [0, 1].

    Example:
    >>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
    >>> policy = tfpriors.tta.Policy.flip_crop()
    >>> train = tfpriors.tta.mean_embeddings(model, "features", x_train[:200], policy, 4)
    >>> test = tfpriors.tta.mean_embeddings(model, "features", x_test[:100], policy, 4)
    >>> accuracy = tfpriors.tta.linear_probe(train, y_train[:200], test, y_test[:100])
    >>> bool(0.0 <= accuracy <= 1.0)
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = _validation.real_number(c, "c", minimum=1e-12)
    splits = {
        "train": _probe_split(train_embeddings, train_labels, "train"),
        "test": _probe_split(test_embeddings, test_labels, "test"),
    }
    if splits["train"][0].shape[1] != splits["test"][0].shape[1]:
        raise ValueError(
            "`test_embeddings` must have as many features as "
            f"`train_embeddings` ({splits['train'][0].shape[1]}); received "
            f"{splits['test'][0].shape[1]}."
        )
    if len(np.unique(splits["train"][1])) < 2:
        raise ValueError("`train_labels` must hold at least two classes.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    probe.fit(*splits["train"])
    return float(probe.score(*splits["test"]))
