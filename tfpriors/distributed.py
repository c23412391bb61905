"""Training under ``tf.distribute`` strategies, across processes and machines.

Two things live here:

* :func:`batch_rows` and :func:`replica_offset`, how our stochastic layers
  draw their noise. Under a
  strategy each replica holds a slice of the global batch; noise drawn for
  the slice alone would depend on how many replicas there are. Instead every
  replica draws the noise of the *global* batch from the same seed and keeps
  its own rows, so a training step sees the same noise whether it runs on one
  device or is split over several, and the distributed run reproduces the
  single-device run up to floating-point summation order.
* :func:`enable_multi_worker_fit`, which works around two bugs of Keras 3's
  TensorFlow trainer that make ``model.fit`` fail under
  ``tf.distribute.MultiWorkerMirroredStrategy`` with more than one worker
  (keras-team/keras#20585).

Example:
>>> generator = keras.random.SeedGenerator(0)
>>> noise = tfpriors.distributed.batch_rows(
...     lambda shape: keras.random.normal(shape, seed=generator), (4, 3))
>>> tuple(noise.shape)
(4, 3)
"""

import tensorflow as tf


def batch_rows(sample, shape):
    """Draws ``sample(shape)`` as if the whole global batch were on this device.

    Args:
        sample: a function of a shape returning random values of that shape
            (``lambda s: keras.random.normal(s, seed=self.seed_generator)``);
            it is called once per step, so a seed generator advances once
            whatever the number of replicas.
        shape: the local shape, batch first (a tensor or a list).

    Returns:
        The rows of the global draw that belong to this replica: replica
        ``r`` of ``R`` keeps rows ``[r * b, (r + 1) * b)`` of a draw for
        ``R * b`` rows, ``b`` its own batch size. This is the single-device
        draw exactly when the global batch splits evenly over the replicas
        (``tf.distribute`` gives replica ``r`` the ``r``-th slice). In an
        uneven last batch every example still gets noise of the right
        distribution, but not the single-device values, and an example on one
        replica may share its row with one on the next.
        Without a strategy (or with one replica) this is ``sample(shape)``
        itself, so single-device results do not change.

    Example:
    A layer adding Gaussian noise the same way on one device and under a strategy:

    >>> class Noisy(keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.seed_generator = keras.random.SeedGenerator(0)
    ...     def call(self, x):
    ...         noise = tfpriors.distributed.batch_rows(
    ...             lambda s: keras.random.normal(s, seed=self.seed_generator), tf.shape(x))
    ...         return x + noise
    >>> Noisy()(np.zeros((4, 3), "float32")).shape
    TensorShape([4, 3])

    Split over the local CPUs, the replicas' rows put together are the
    single-device draw (one replica where the machine shows one CPU device):

    >>> devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    >>> strategy = tf.distribute.MirroredStrategy(devices)
    >>> def step():
    ...     rows = 4 // strategy.num_replicas_in_sync
    ...     return tfpriors.distributed.batch_rows(
    ...         lambda s: tf.random.stateless_normal(s, seed=[1, 2]), [rows, 3])
    >>> parts = strategy.experimental_local_results(strategy.run(step))
    >>> single = tf.random.stateless_normal([4, 3], seed=[1, 2])
    >>> bool(np.array_equal(np.concatenate(parts), single))
    True
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return sample(shape)
    # No collective to learn the other replicas' sizes: under MirroredStrategy
    # the replicas run in threads that would interleave at it, and Keras'
    # per-layer loss lists are not thread-safe. Even slices are assumed.
    shape = tf.convert_to_tensor(shape, tf.int32)
    rows = shape[0]
    offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
    draw = sample(tf.concat([[rows * context.num_replicas_in_sync], shape[1:]], 0))
    return draw[offset : offset + rows]


def replica_offset(size):
    """Where this replica's elements start in a draw for the global batch.

    The counterpart of :func:`batch_rows` for counter-based noise
    (:func:`tfpriors.ops.lrt_sample`), which draws any run of elements of a
    stream directly: replica ``r`` of ``R``, holding ``size`` elements, takes
    elements ``[r * size, (r + 1) * size)`` of the single-device draw, the
    same rows as :func:`batch_rows` keeps (and under the same assumption of
    even slices).

    Args:
        size: the number of elements this replica draws (an int or an integer
            scalar tensor).

    Returns:
        The Python int 0 without a strategy or with one replica, else an int64
        scalar tensor.

    Example:
    >>> tfpriors.distributed.replica_offset(12)  # no strategy: this is the whole batch
    0
    >>> devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    >>> strategy = tf.distribute.MirroredStrategy(devices)
    >>> offsets = strategy.experimental_local_results(
    ...     strategy.run(lambda: tf.convert_to_tensor(tfpriors.distributed.replica_offset(12),
    ...                                               tf.int64)))
    >>> [int(offset) for offset in offsets] == [12 * r for r in range(len(devices))]
    True
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0
    replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
    return replica * tf.cast(size, tf.int64)


# -- Keras 3 and MultiWorkerMirroredStrategy ---------------------------------------------

_PATCHED = False


def _local_first(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def enable_multi_worker_fit():
    """Makes ``model.fit`` / ``evaluate`` work under multi-worker ``MultiWorkerMirroredStrategy``.

    Keras 3.15's TensorFlow trainer fails there in two places
    (keras-team/keras#20585): before the first step it all-reduces the whole
    ``(x, y, sample_weight)`` tuple of a distributed batch to learn its shapes
    (``ValueError: Attempt to convert a value (PerReplica ...)``), and after
    every step it reduces scalar logs along an axis 0 they do not have
    (``Invalid reduction dimension 0 for input with 0 dimensions``). This
    function replaces both, once per process, by what single-worker
    strategies do: the first batch's shapes come from the local replica, and
    scalar logs are averaged over replicas (they are equal, since Keras
    metrics are aggregated across replicas). Single-device and
    ``MirroredStrategy`` training go through untouched code paths.

    Call it once, before ``fit``, in every worker; further calls do nothing.

    Example:
    In the script every worker runs (``TF_CONFIG`` describes the cluster)::

        tfpriors.distributed.enable_multi_worker_fit()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(dataset, epochs=10)

    Training without a multi-worker strategy is unaffected by the patch:

    >>> tfpriors.distributed.enable_multi_worker_fit()
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0)
    >>> len(history.history["loss"])
    1
    """
    global _PATCHED
    if _PATCHED:
        return
    from keras.src.backend.tensorflow import trainer

    reduce_per_replica = trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or not trainer._collective_all_reduce_multi_worker(
            self._distribute_strategy
        ):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, epoch_iterator in iterator:
                batch = next(epoch_iterator)
                data_batch = tf.nest.map_structure(
                    lambda value: _local_first(self.distribute_strategy, value), batch
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_logs(values, strategy, reduction):
        if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_logs
    _PATCHED = True
