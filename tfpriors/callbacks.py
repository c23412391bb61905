"""Keras callbacks that schedule and log the parts of a variational objective.

:class:`KLWarmup` ramps the KL weight of variational layers,
:class:`SparsityMonitor` logs the sparsity of Sparse VD layers,
:class:`PonderCostSchedule` and :class:`TemperatureSchedule` move the ponder
cost and the relaxation temperature of adaptive computation time blocks, and
:class:`EpochProgressBar` shows one progress bar over the epochs.

Example:
>>> warmup = tfpriors.callbacks.KLWarmup(start_epoch=0, end_epoch=4)
>>> [warmup.weight_at(epoch) for epoch in range(6)]
[0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
"""

import keras
import numpy as np

from tfpriors import _validation
from tfpriors.compression import compression_report
from tfpriors.layers.adaptive import ProbabilisticACTBlock, adaptive_blocks
from tfpriors.layers.kl_layer import kl_layers, set_kl_weight


@keras.saving.register_keras_serializable(package="tfpriors")
class KLWarmup(keras.callbacks.Callback):
    """Raises the KL weight linearly from 0 to 1 between two epochs.

    Before ``start_epoch`` the weight is 0 (pure likelihood); from ``end_epoch``
    on it is 1 (the full ELBO). The current weight is written to ``logs`` as
    ``kl_weight`` so it shows in the progress bar, CSVLogger and TensorBoard.

    Args:
        start_epoch: first epoch (0-based) of the ramp, where the weight is 0.
        end_epoch: epoch at which the weight reaches 1; > ``start_epoch``.

    Raises:
        ValueError: at the start of training, when the model has no
            variational (KL) layer.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     tfpriors.layers.SparseVDDense(32, activation="relu", name="hidden"),
    ...     tfpriors.layers.SparseVDDense(10, name="logits")])
    >>> tfpriors.set_dataset_size(model, len(x))
    2
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:256], y[:256], epochs=2, batch_size=128, verbose=0,
    ...                     callbacks=[tfpriors.callbacks.KLWarmup(start_epoch=0, end_epoch=4)])
    >>> history.history["kl_weight"]
    [0.0, 0.25]
    """

    def __init__(self, start_epoch=0, end_epoch=20):
        super().__init__()
        if (
            isinstance(start_epoch, bool)
            or not isinstance(start_epoch, (int, np.integer))
            or start_epoch < 0
        ):
            raise ValueError(f"`start_epoch` must be an integer >= 0; received {start_epoch!r}.")
        self.start_epoch = int(start_epoch)
        self.end_epoch = _validation.positive_int(end_epoch, "end_epoch")
        if self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"`end_epoch` ({end_epoch}) must be greater than `start_epoch` ({start_epoch})."
            )

    def weight_at(self, epoch):
        """The KL weight used during ``epoch`` (0-based), a float in [0, 1].

        Args:
            epoch: the epoch, 0-based.

        Returns:
            The KL weight, a float in [0, 1].

        Example:
        >>> tfpriors.callbacks.KLWarmup(start_epoch=2, end_epoch=6).weight_at(3)
        0.25
        """
        ramp = (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        return float(np.clip(ramp, 0.0, 1.0))

    def on_train_begin(self, logs=None):
        if not kl_layers(self.model):
            raise ValueError("KLWarmup was given a model without variational (KL) layers.")

    def on_epoch_begin(self, epoch, logs=None):
        set_kl_weight(self.model, self.weight_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = self.weight_at(epoch)

    def get_config(self):
        return {"start_epoch": self.start_epoch, "end_epoch": self.end_epoch}


@keras.saving.register_keras_serializable(package="tfpriors")
class SparsityMonitor(keras.callbacks.Callback):
    """Writes the sparsity and compression of Sparse VD layers into ``logs``.

    At the end of each epoch it adds ``sparsity`` and ``compression`` (whole
    model) and, with ``per_layer=True``, ``sparsity/<layer name>`` for each
    Sparse VD layer. Keras' progress bar shows them; put this callback before
    ``CSVLogger`` or ``TensorBoard`` in the list so they record them too.

    Args:
        per_layer: also log each layer's sparsity.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits()
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     tfpriors.layers.SparseVDDense(32, activation="relu", name="hidden"),
    ...     tfpriors.layers.SparseVDDense(10, name="logits")])
    >>> tfpriors.set_dataset_size(model, len(x))
    2
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:256], y[:256], epochs=1, batch_size=128, verbose=0, callbacks=[
    ...     tfpriors.callbacks.SparsityMonitor(), keras.callbacks.CSVLogger("log.csv")])
    >>> sorted(history.history)
    ['compression', 'loss', 'sparsity', 'sparsity/hidden', 'sparsity/logits']
    >>> bool(0.0 <= history.history["sparsity"][0] <= 1.0)
    True
    >>> "sparsity/hidden" in open("log.csv").readline().strip().split(",")
    True
    """

    def __init__(self, per_layer=True):
        super().__init__()
        per_layer = _validation.boolean(per_layer, "per_layer")
        self.per_layer = per_layer

    def compute(self):
        """Returns the dict of values this callback would log now.

        Returns:
            A dict: ``sparsity`` and ``compression`` of the whole model and,
            with ``per_layer=True``, ``sparsity/<layer name>`` per Sparse VD layer.

        Example:
        >>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
        >>> monitor = tfpriors.callbacks.SparsityMonitor(per_layer=False)
        >>> monitor.set_model(model)
        >>> values = monitor.compute()
        >>> sorted(values)
        ['compression', 'sparsity']
        >>> bool(values["sparsity"] < 0.05)  # a fresh model keeps almost every weight
        True
        """
        report = compression_report(self.model)
        values = {"sparsity": report.total_sparsity, "compression": report.total_compression}
        if self.per_layer:
            for row in report.layers:
                values[f"sparsity/{row.name}"] = row.sparsity
        return values

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.compute())

    def get_config(self):
        return {"per_layer": self.per_layer}


class EpochProgressBar(keras.callbacks.Callback):
    """One tqdm bar over epochs with the latest logs as its postfix.

    Use with ``fit(verbose=0)`` for long runs where Keras' per-epoch lines
    would scroll away. The bar is drawn by ``tqdm.auto`` (on stderr, or as a
    widget in notebooks).

    Args:
        description: the bar's label.
        keys: the names of the logs to show; default: every log whose name
            has no ``/`` (per-layer values are left out).

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> bar = tfpriors.callbacks.EpochProgressBar("training", keys=["loss"])
    >>> history = model.fit(np.ones((8, 4)), np.zeros((8, 1)), epochs=3, verbose=0,
    ...                     callbacks=[bar])
    >>> len(history.history["loss"])
    3
    """

    def __init__(self, description="training", keys=None):
        super().__init__()
        if not isinstance(description, str):
            raise TypeError(f"`description` must be a string; received {description!r}.")
        if keys is not None:
            if (
                isinstance(keys, str)
                or not isinstance(keys, (list, tuple))
                or not all(isinstance(k, str) for k in keys)
            ):
                raise TypeError(f"`keys` must be None or a list of log names; received {keys!r}.")
            keys = list(keys)
        self.description = description
        self.keys = keys
        self._bar = None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=self.params.get("epochs"), desc=self.description, unit="epoch", leave=True
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = self.keys or [k for k in logs if "/" not in k]
        self._bar.set_postfix({k: f"{logs[k]:.4g}" for k in keys if k in logs}, refresh=False)
        self._bar.update(1)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _epoch(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0; received {value!r}.")
    return int(value)


class _AdaptiveSchedule(keras.callbacks.Callback):
    """Moves a value of every adaptive block from ``start`` to ``end`` between two epochs."""

    log_key = None

    def __init__(self, start, end, start_epoch=0, end_epoch=10):
        super().__init__()
        self.start = self._check(start, "start")
        self.end = self._check(end, "end")
        self.start_epoch = _epoch(start_epoch, "start_epoch")
        self.end_epoch = _validation.positive_int(end_epoch, "end_epoch")
        if self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"`end_epoch` ({end_epoch}) must be greater than `start_epoch` ({start_epoch})."
            )

    def value_at(self, epoch):
        """The value used during ``epoch`` (0-based)."""
        ramp = float(
            np.clip((epoch - self.start_epoch) / (self.end_epoch - self.start_epoch), 0.0, 1.0)
        )
        return self._interpolate(ramp)

    def _interpolate(self, ramp):
        return self.start + ramp * (self.end - self.start)

    def _blocks(self):
        return adaptive_blocks(self.model)

    def on_train_begin(self, logs=None):
        if not self._targets():
            raise ValueError(
                f"{type(self).__name__} was given a model without the blocks it schedules."
            )

    def on_epoch_begin(self, epoch, logs=None):
        value = self.value_at(epoch)
        for block in self._targets():
            self._set(block, value)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_key] = self.value_at(epoch)

    def get_config(self):
        return {
            "start": self.start,
            "end": self.end,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
        }


@keras.saving.register_keras_serializable(package="tfpriors")
class PonderCostSchedule(_AdaptiveSchedule):
    """Moves the ponder cost ``tau`` of every ACT / SACT / PACT block linearly.

    ``tau`` is a variable of each block, so no retracing happens. The current
    value is logged as ``ponder_cost``; the blocks log their mean number of
    evaluated units as ``<block>/ponder``.

    Args:
        start: ``tau`` before ``start_epoch`` (>= 0).
        end: ``tau`` from ``end_epoch`` on (>= 0).
        start_epoch: first epoch (0-based) of the ramp, where ``tau`` is ``start``.
        end_epoch: epoch at which ``tau`` reaches ``end``; > ``start_epoch``.

    Raises:
        ValueError: at the start of training, when the model has no adaptive block.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2,), kind="act", widths=(4,))
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> schedule = tfpriors.callbacks.PonderCostSchedule(0.0, 0.05, start_epoch=0, end_epoch=2)
    >>> history = model.fit(x[:256], y[:256], epochs=2, batch_size=128, verbose=0,
    ...                     callbacks=[schedule])
    >>> history.history["ponder_cost"]
    [0.0, 0.025]
    >>> [round(schedule.value_at(epoch), 4) for epoch in range(4)]
    [0.0, 0.025, 0.05, 0.05]
    """

    log_key = "ponder_cost"

    @staticmethod
    def _check(value, name):
        return _validation.real_number(value, name, minimum=0.0)

    def _targets(self):
        return self._blocks()

    @staticmethod
    def _set(block, value):
        block.set_ponder_cost(value)


@keras.saving.register_keras_serializable(package="tfpriors")
class TemperatureSchedule(_AdaptiveSchedule):
    """Anneals the relaxation temperature of probabilistic ACT blocks geometrically.

    The temperature goes from ``start`` to ``end`` log-linearly between the
    two epochs and is logged as ``temperature``.

    Args:
        start: temperature before ``start_epoch`` (> 0).
        end: temperature from ``end_epoch`` on (> 0).
        start_epoch: first epoch (0-based) of the ramp, where the temperature is ``start``.
        end_epoch: epoch at which the temperature reaches ``end``; > ``start_epoch``.

    Raises:
        ValueError: at the start of training, when the model has no
            probabilistic ACT block.

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2,), kind="pact", widths=(4,))
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> schedule = tfpriors.callbacks.TemperatureSchedule(1.0, 0.01, end_epoch=2)
    >>> history = model.fit(x[:256], y[:256], epochs=2, batch_size=128, verbose=0,
    ...                     callbacks=[schedule])
    >>> [round(t, 4) for t in history.history["temperature"]]
    [1.0, 0.1]
    """

    log_key = "temperature"

    @staticmethod
    def _check(value, name):
        return _validation.positive_number(value, name)

    def _interpolate(self, ramp):
        return float(np.exp(np.log(self.start) + ramp * (np.log(self.end) - np.log(self.start))))

    def _targets(self):
        return [b for b in self._blocks() if isinstance(b, ProbabilisticACTBlock)]

    @staticmethod
    def _set(block, value):
        block.set_temperature(value)
