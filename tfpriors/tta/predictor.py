"""Test-time augmentation for one model or an ensemble.

The prediction for an image is the mean, over ensemble members and over
``num_samples`` augmentations, of the predicted probabilities; its log is
the merged "logit" (log of the mean probability), which is what the
calibration metrics score.

Example:
>>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
>>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
>>> predictor = tfpriors.tta.TTAPredictor(model, tfpriors.tta.Policy.flip(), num_samples=4)
>>> predictor.predict(x[:100]).shape
(100, 10)
"""

import keras
import numpy as np
import tensorflow as tf
from scipy import special

from tfpriors import _probabilities, _validation, calibration
from tfpriors.tta import _compiled
from tfpriors.tta.policy import Policy


def _call(model, inputs):
    if isinstance(model, keras.layers.Layer):
        return model(inputs, training=False)
    return model(inputs)


def _resolve_strategy(strategy, members):
    """The strategy to spread model calls over, or None for plain calls.

    An explicit ``strategy`` wins; otherwise the one whose scope is open, then
    the one a member was built under (Keras remembers it), when it has more
    than one replica.
    """
    if strategy is not None:
        if not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(
                "`strategy` must be a tf.distribute.Strategy or None; received "
                f"{type(strategy).__name__}."
            )
        return strategy
    candidates = [tf.distribute.get_strategy()] if tf.distribute.has_strategy() else []
    candidates += [getattr(m, "_distribute_strategy", None) for m in members]
    for candidate in candidates:
        if candidate is not None and candidate.num_replicas_in_sync > 1:
            return candidate
    return None


class _ReplicatedCall:
    """Calls a model on a batch split evenly over a strategy's replicas.

    The batch is padded to a multiple of the replica count (with copies of its
    last row, dropped again afterwards), each replica gets one contiguous
    slice, and the slices' outputs are concatenated back in input order.
    """

    def __init__(self, strategy, model):
        self.strategy = strategy
        self.model = model
        self._step = tf.function(lambda inputs: _call(model, inputs), reduce_retracing=True)

    def __call__(self, inputs):
        replicas = self.strategy.num_replicas_in_sync
        count = len(inputs)
        per_replica = -(-count // replicas)
        if per_replica * replicas != count:
            padding = np.repeat(inputs[-1:], per_replica * replicas - count, axis=0)
            inputs = np.concatenate([inputs, padding])

        def slice_for(context):
            start = context.replica_id_in_sync_group * per_replica
            return tf.constant(inputs[start : start + per_replica])

        distributed = self.strategy.experimental_distribute_values_from_function(slice_for)
        outputs = self.strategy.run(self._step, args=(distributed,))
        # Replica outputs come back to the host in replica order; concatenating
        # them there needs no collective op (which would tie every call's
        # shapes together across strategies sharing the devices).
        local = self.strategy.experimental_local_results(outputs)
        return np.concatenate([keras.ops.convert_to_numpy(v) for v in local])[:count]


def _caller(model, strategy):
    """How one member is called on a batch of augmented inputs.

    Keras models through a cached traced call (graph rewrites such as fused
    convolutions apply there, and no layer is dispatched from Python); under
    a multi-replica strategy split over its replicas; any other callable as
    it is, on a NumPy array.
    """
    if strategy is not None:
        replicated = _ReplicatedCall(strategy, model)
        return lambda inputs: replicated(keras.ops.convert_to_numpy(inputs))
    if isinstance(model, keras.layers.Layer):
        return _compiled.graph_call(model)
    return lambda inputs: model(keras.ops.convert_to_numpy(inputs))


class TTAPredictor:
    """Averages an ensemble's predictions over test-time augmentations.

    Each member gets its own augmentations of the same images (its own
    random stream). Batches are processed one at a time, with the
    ``num_samples`` augmented copies of a batch stacked into one model call,
    so memory stays bounded by ``batch_size * num_samples`` images. The
    copies are augmented in one traced TensorFlow function (per-image random
    magnitudes from stateless seeds: the same ``seed`` gives the same
    result), and Keras members run as traced functions, cached per model;
    with no op in the policy each member sees a batch once, however many
    samples are asked for (the draws would all be equal).

    Args:
        models: a Keras model or a list of them (the ensemble members), all
            mapping the same inputs to the same number of classes.
        policy: a :class:`Policy` (default: no augmentation).
        num_samples: augmentations per image and member.
        from_logits: ``True`` when the models output logits, ``False`` when
            they output probabilities, ``"auto"`` (default) to tell for each
            member: a model ending in a softmax (``Dense(...,
            activation="softmax")``, ``Softmax()``, ``Activation("softmax")``)
            outputs probabilities, one ending in a layer without activation
            outputs logits; for any other member, its outputs on the first
            batch of each call decide (probabilities when every row is
            non-negative and sums to 1, else logits).
        seed: seed of the augmentation draws.
        strategy: a ``tf.distribute.Strategy`` whose replicas share each
            model call (each gets an equal slice of the augmented batch).
            Default: the strategy whose scope is open, else the one the
            members were built under, else plain calls on one device.

    Raises:
        ValueError: when ``models`` is empty or holds something that is not
            callable, or for ``from_logits=True`` with a member that ends in a
            softmax (at predict time: on outputs that are all probability
            rows; and ``from_logits=False`` on outputs that are not).
        TypeError: for a ``policy`` that is not a :class:`Policy`, a bad
            ``strategy``, or a ``from_logits`` other than a bool or ``"auto"``.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> members = [tfpriors.models.small_cnn((8, 8, 1), 10, width=4) for _ in range(3)]
    >>> predictor = tfpriors.tta.TTAPredictor(
    ...     members, tfpriors.tta.Policy.flip_crop(), num_samples=4)
    >>> probs = predictor.predict(x[:100], batch_size=50)
    >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0))
    ((100, 10), True)
    >>> sorted(predictor.evaluate(x[:100], y[:100]))
    ['accuracy', 'brier', 'calibrated_nll', 'ece', 'nll']

    A model that ends in a softmax is read as probabilities:

    >>> softmax_model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                                   keras.layers.Dense(10, activation="softmax")])
    >>> probs = tfpriors.tta.TTAPredictor(softmax_model, num_samples=1).predict(x[:5])
    >>> bool(np.allclose(probs, softmax_model.predict(x[:5], verbose=0), atol=1e-6))
    True
    """

    def __init__(
        self, models, policy=None, num_samples=10, from_logits="auto", seed=0, strategy=None
    ):
        members = list(models) if isinstance(models, (list, tuple)) else [models]
        if not members or not all(
            isinstance(m, keras.layers.Layer) or callable(m) for m in members
        ):
            raise ValueError(
                f"`models` must be a Keras model or a non-empty list of them; received {models!r}."
            )
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"`policy` must be a tfpriors.tta.Policy; received {type(policy).__name__}."
            )
        from_logits = _probabilities.check_from_logits(from_logits)
        # What each member's last layer says it outputs (None: its outputs decide).
        self._kinds = [
            _probabilities.check_model(m, from_logits, model_name=f"ensemble member {i}")
            for i, m in enumerate(members)
        ]
        self.models = members
        self.policy = policy or Policy.identity()
        self.num_samples = _validation.positive_int(num_samples, "num_samples")
        self.from_logits = from_logits
        self.seed = _validation.seed(seed)
        if self.seed is None:
            raise TypeError(
                "`seed` must be a non-negative integer (TTA draws are reproducible); received None."
            )
        self.strategy = strategy
        _resolve_strategy(strategy, members)  # a bad argument fails here, not at predict

    def _member_log_probs(self, member, outputs, reading):
        """Log-probabilities of one member's outputs, and how they were read.

        ``reading`` is this call's reading of the member so far (``True``:
        logits), ``None`` before its first batch. The first batch settles
        ``from_logits`` (``"auto"``, or an explicit value checked against the
        outputs); later batches keep that reading, and outputs read as
        probabilities are checked on every batch.
        """
        outputs = keras.ops.convert_to_numpy(outputs)
        dtype = outputs.dtype
        outputs = np.asarray(outputs, dtype="float64")
        if outputs.ndim != 2:
            raise ValueError(
                f"Ensemble member {member} must output (batch, num_classes); "
                f"it gave shape {outputs.shape}."
            )
        if reading is None or not reading:
            reading = _probabilities.resolve(
                outputs,
                self.from_logits if reading is None else False,
                axis=1,
                dtype=dtype,
                kind=self._kinds[member],
            )
        if reading:
            return special.log_softmax(outputs, axis=1), True
        return np.log(np.clip(outputs, 1e-12, 1.0)), False

    def predict_log(self, x, batch_size=256, verbose=0):
        """Log of the mean probability over members and augmentations, ``(n, classes)``.

        Args:
            x: the inputs, a batch (images in [0, 1] for image policies).
            batch_size: inputs per step; each member's call takes
                ``batch_size * num_samples`` augmented inputs.
            verbose: 1 shows a progress bar, 0 none.

        Returns:
            A float64 array ``(n, num_classes)`` of log-probabilities (the
            merged logits, which the calibration metrics take).

        Example:
        >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
        >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
        >>> predictor = tfpriors.tta.TTAPredictor(model, tfpriors.tta.Policy.flip(), num_samples=2)
        >>> log_probs = predictor.predict_log(x[:50])
        >>> log_probs.shape, bool(np.allclose(np.exp(log_probs).sum(axis=1), 1.0))
        ((50, 10), True)
        """
        batch_size = _validation.positive_int(batch_size, "batch_size")
        x = _validation.finite_batch(x, "x")
        if x.ndim < 2:
            raise ValueError(f"`x` must be a batch of inputs; received shape {x.shape}.")
        draws = len(self.models) * self.num_samples
        progress = keras.utils.Progbar(len(x), verbose=verbose, unit_name="image")
        rngs = [np.random.default_rng(self.seed + i) for i in range(len(self.models))]
        strategy = _resolve_strategy(self.strategy, self.models)
        callers = [_caller(model, strategy) for model in self.models]
        # No op in any sub-policy: every draw is the batch itself.
        augments = any(self.policy.subpolicies)
        if augments:
            x = _compiled.check_images(x)
        readings = [None] * len(self.models)
        merged = []
        for batch_index, start in enumerate(range(0, len(x), batch_size)):
            batch = x[start : start + batch_size]
            total = None
            for member, (caller, rng) in enumerate(zip(callers, rngs)):
                # All samples of a batch augmented in one graph call, and sent
                # through the model in one call.
                if augments:
                    indices, bounds = _compiled.encode(
                        [self.policy.subpolicy_for_draw(s, rng) for s in range(self.num_samples)]
                    )
                    seed = tf.constant(
                        [(self.seed + 7919 * member) % 2**31, batch_index % 2**31], tf.int32
                    )
                    augmented = _compiled.augment_draws(batch, indices, bounds, seed)
                else:
                    augmented = batch  # identical draws: one call stands for all of them
                log_probs, readings[member] = self._member_log_probs(
                    member, caller(augmented), readings[member]
                )
                copies = self.num_samples if augments else 1
                log_probs = log_probs.reshape(copies, len(batch), -1)
                member_sum = special.logsumexp(log_probs, axis=0) + np.log(
                    self.num_samples / copies
                )
                total = member_sum if total is None else np.logaddexp(total, member_sum)
            merged.append(total - np.log(draws))
            progress.update(min(start + batch_size, len(x)))
        return np.concatenate(merged)

    def predict(self, x, batch_size=256, verbose=0):
        """Mean probability over members and augmentations, ``(n, classes)``.

        Args:
            x: the inputs, a batch (images in [0, 1] for image policies).
            batch_size: inputs per step.
            verbose: 1 shows a progress bar, 0 none.

        Returns:
            A float64 array ``(n, num_classes)`` whose rows sum to 1.

        Example:
        >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
        >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
        >>> predictor = tfpriors.tta.TTAPredictor(model, num_samples=1)
        >>> probs = predictor.predict(x[:50])
        >>> bool(np.allclose(probs, keras.ops.softmax(model(x[:50])), atol=1e-6))
        True
        """
        return np.exp(self.predict_log(x, batch_size=batch_size, verbose=verbose))

    def evaluate(self, x, y, batch_size=256, calibration_splits=5, bins=15, verbose=0):
        """Accuracy, NLL, calibrated NLL, ECE and Brier score of the merged prediction.

        Args:
            x: the inputs.
            y: their integer labels.
            batch_size: inputs per step.
            calibration_splits: random half splits of the calibrated NLL.
            bins: confidence bins of the ECE.
            verbose: 1 shows a progress bar, 0 none.

        Returns:
            A dict with the floats ``accuracy``, ``nll``, ``calibrated_nll``,
            ``ece`` and ``brier`` (see :mod:`tfpriors.calibration`).

        Example:
        >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
        >>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
        >>> predictor = tfpriors.tta.TTAPredictor(model, tfpriors.tta.Policy.flip(), num_samples=2)
        >>> metrics = predictor.evaluate(x[:100], y[:100])
        >>> sorted(metrics)
        ['accuracy', 'brier', 'calibrated_nll', 'ece', 'nll']
        >>> bool(0.0 <= metrics["accuracy"] <= 1.0)
        True
        """
        # Log-probabilities are logits (their softmax is themselves).
        log_probs = self.predict_log(x, batch_size=batch_size, verbose=verbose)
        return {
            "accuracy": calibration.accuracy(log_probs, y, from_logits=True),
            "nll": calibration.nll(log_probs, y, from_logits=True),
            "calibrated_nll": calibration.calibrated_nll(
                log_probs, y, from_logits=True, splits=calibration_splits, seed=self.seed
            ),
            "ece": calibration.ece(log_probs, y, from_logits=True, bins=bins),
            "brier": calibration.brier(log_probs, y, from_logits=True),
        }
