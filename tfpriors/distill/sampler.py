"""Collecting SGLD / SGHMC iterates as posterior samples, and their ensemble."""

import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from tfpriors import _validation
from tfpriors._inputs import FloatInputs
from tfpriors._rewrite import copy_layer
from tfpriors.distill import losses
from tfpriors.io import atomic_path, check_archive

TASKS = ("classification", "regression")


def _non_negative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be an integer >= 0; received {value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="tfpriors")
class PosteriorSampler(keras.callbacks.Callback):
    """Keeps thinned weights of a model trained with SGLD/SGHMC as posterior samples.

    Epochs are counted by the callback itself (across several ``fit`` calls
    and restores). Once ``burn_in_epochs`` epochs are over it keeps the
    weights after every ``thin``-th training step. At most ``max_samples``
    are kept; beyond that the oldest is dropped, so the kept samples are the
    most recent, and memory and disk stay bounded. Up to ``in_memory`` kept
    samples live in memory (a new sample takes a memory slot whenever one is
    free), the rest go to ``directory`` as ``sample_<6-digit index>.npz``
    files, each written atomically.

    Saving and restoring (crash-safe training): :meth:`get_state` returns a
    dict (counters, sample file names, in-memory arrays) that
    :meth:`set_state` takes back; :meth:`save_state` / :meth:`load_state`
    write and read it as one ``.npz`` file (atomically). Sample files on disk
    are not copied into the state: keep ``directory`` beside it. With
    ``state_path`` the sampler does this itself, in step with
    ``keras.callbacks.BackupAndRestore``: it writes its state at the end of
    every epoch and reads it back when training begins, and a sample file
    dropped during an epoch is deleted only once the state no longer
    refers to it, so a run killed mid-epoch resumes with every file it needs.
    Keep ``directory`` and ``state_path`` outside BackupAndRestore's
    ``backup_dir``: that folder is deleted when training ends.

    Args:
        burn_in_epochs: epochs (>= 0) whose iterates are discarded.
        thin: keep one sample every ``thin`` (> 0) training steps.
        max_samples: most samples kept (> 0).
        directory: folder for the samples beyond ``in_memory``; may be
            ``None`` when ``in_memory >= max_samples``.
        in_memory: how many samples (>= 0) are held in memory.
        state_path: optional ``.npz`` file for the sampler's own state, saved
            at every epoch end and loaded (if present) when training begins.

    Example:
    >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> x, y = x[:256], y[:256]
    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> sampler = tfpriors.distill.PosteriorSampler(burn_in_epochs=1, thin=2, max_samples=5,
    ...                                             directory="samples/", in_memory=2)
    >>> model.compile(tfpriors.distill.SGLD(1e-4, dataset_size=len(x)), loss)
    >>> history = model.fit(x, y, epochs=3, batch_size=32, callbacks=[sampler], verbose=0)
    >>> sampler.num_samples  # 16 steps after burn-in give 8 samples; the 5 latest are kept
    5
    >>> import os; len(os.listdir("samples"))  # the 3 samples beyond in_memory=2 are on disk
    3
    >>> teacher = sampler.ensemble()  # log-mean-prob of the samples
    >>> teacher.predict(x_test[:4], verbose=0).shape
    (4, 10)
    """

    def __init__(
        self,
        burn_in_epochs=20,
        thin=50,
        max_samples=100,
        directory="samples/",
        in_memory=10,
        state_path=None,
    ):
        super().__init__()
        self.burn_in_epochs = _non_negative_int(burn_in_epochs, "burn_in_epochs")
        self.thin = _validation.positive_int(thin, "thin")
        self.max_samples = _validation.positive_int(max_samples, "max_samples")
        self.in_memory = _non_negative_int(in_memory, "in_memory")
        if directory is None:
            if self.in_memory < self.max_samples:
                raise ValueError(
                    f"`directory` may be None only when `in_memory` ({self.in_memory}) >= "
                    f"`max_samples` ({self.max_samples}): the other samples go to disk."
                )
        elif not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"`directory` must be a path or None; received {directory!r}.")
        self.directory = None if directory is None else os.fspath(directory)
        if state_path is not None and not isinstance(state_path, (str, os.PathLike)):
            raise TypeError(f"`state_path` must be a path or None; received {state_path!r}.")
        self.state_path = None if state_path is None else os.fspath(state_path)
        # Files of dropped samples that the last saved state still lists.
        self._pending_deletions = []
        self.epochs_seen = 0
        self.steps_after_burn_in = 0
        self.next_index = 0
        # Each record is {"index": i, "weights": [...]} or {"index": i, "file": name}.
        self._records = []

    def get_config(self):
        return {
            "burn_in_epochs": self.burn_in_epochs,
            "thin": self.thin,
            "max_samples": self.max_samples,
            "directory": self.directory,
            "in_memory": self.in_memory,
            "state_path": self.state_path,
        }

    # -- collection ----------------------------------------------------------

    @property
    def num_samples(self):
        """How many samples are kept now."""
        return len(self._records)

    def on_train_begin(self, logs=None):
        if self.state_path is not None and os.path.exists(self.state_path):
            self.load_state(self.state_path)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_seen += 1
        if logs is not None:
            logs["posterior_samples"] = self.num_samples
        if self.state_path is not None:
            self.save_state(self.state_path)
            for path in self._pending_deletions:
                if os.path.exists(path):
                    os.remove(path)
            self._pending_deletions = []

    def on_train_batch_end(self, batch, logs=None):
        if self.epochs_seen < self.burn_in_epochs:
            return
        self.steps_after_burn_in += 1
        if self.steps_after_burn_in % self.thin == 0:
            self.add_sample(self.model.get_weights())

    def add_sample(self, weights):
        """Keeps ``weights`` (a list of arrays, as ``model.get_weights()``) as a sample."""
        index = self.next_index
        self.next_index += 1
        # Dropping first frees the oldest slot (memory or disk) for this one.
        while len(self._records) >= self.max_samples:
            self._drop(self._records.pop(0))
        in_memory = sum("weights" in r for r in self._records)
        if in_memory < self.in_memory:
            record = {"index": index, "weights": [np.array(w) for w in weights]}
        else:
            name = f"sample_{index:06d}.npz"
            with atomic_path(os.path.join(self.directory, name)) as tmp:
                np.savez(tmp, *weights)
            record = {"index": index, "file": name}
        self._records.append(record)

    def _drop(self, record):
        if "file" in record:
            path = os.path.join(self.directory, record["file"])
            if self.state_path is not None:
                self._pending_deletions.append(path)
            elif os.path.exists(path):
                os.remove(path)

    def samples(self):
        """Yields the kept samples (lists of arrays), oldest first, reading disk lazily."""
        for record in self._records:
            if "weights" in record:
                yield record["weights"]
            else:
                path = os.path.join(self.directory, record["file"])
                check_archive(path, "a posterior sample snapshot", argument="directory")
                with np.load(path) as data:
                    yield [data[f"arr_{i}"] for i in range(len(data.files))]

    # -- state ---------------------------------------------------------------

    def get_state(self):
        """Counters, sample file names and in-memory samples, for :meth:`set_state`."""
        return {
            "epochs_seen": self.epochs_seen,
            "steps_after_burn_in": self.steps_after_burn_in,
            "next_index": self.next_index,
            "records": [
                dict(r, weights=list(r["weights"])) if "weights" in r else dict(r)
                for r in self._records
            ],
        }

    def set_state(self, state):
        """Restores what :meth:`get_state` returned."""
        try:
            records = [dict(r) for r in state["records"]]
            self.epochs_seen = int(state["epochs_seen"])
            self.steps_after_burn_in = int(state["steps_after_burn_in"])
            self.next_index = int(state["next_index"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"`state` is not a PosteriorSampler state ({error}).") from None
        missing = [
            r["file"]
            for r in records
            if "file" in r
            and (
                self.directory is None
                or not os.path.exists(os.path.join(self.directory, r["file"]))
            )
        ]
        if missing:
            raise FileNotFoundError(
                f"The sample files {missing} of `state` are not in "
                f"`directory` ({self.directory!r})."
            )
        self._records = records

    def save_state(self, path):
        """Writes :meth:`get_state` to ``path`` (a ``.npz`` file), atomically."""
        state = self.get_state()
        arrays, records = {}, []
        for record in state["records"]:
            if "weights" in record:
                for j, w in enumerate(record["weights"]):
                    arrays[f"s{record['index']}_w{j}"] = w
                records.append({"index": record["index"], "in_memory": len(record["weights"])})
            else:
                records.append(record)
        meta = dict(state, records=records)
        with atomic_path(path) as tmp:
            np.savez(tmp, _meta=np.array(json.dumps(meta)), **arrays)

    def load_state(self, path):
        """Restores the state that :meth:`save_state` wrote to ``path``."""
        check_archive(path, "a PosteriorSampler state")
        with np.load(path) as data:
            meta = json.loads(str(data["_meta"]))
            records = []
            for record in meta["records"]:
                if "in_memory" in record:
                    i = record["index"]
                    records.append(
                        {
                            "index": i,
                            "weights": [data[f"s{i}_w{j}"] for j in range(record["in_memory"])],
                        }
                    )
                else:
                    records.append(record)
        self.set_state(dict(meta, records=records))

    # -- ensemble ------------------------------------------------------------

    def ensemble(
        self, task="classification", output="auto", noise_variance=None, model=None, last=None
    ):
        """A Keras model averaging the kept samples' predictive distributions.

        Args:
            task: ``"classification"``: the model outputs the log of the mean
                probability over samples (log-mean-prob; usable as logits).
                ``"regression"``: it outputs ``[mean, log variance]`` of the
                moment-matched predictive mixture (the learned-noise
                convention of :mod:`tfpriors.distill.losses`).
            output: for classification, what the sampled model outputs:
                ``"logits"``, ``"log_probs"``, ``"probs"`` or ``"auto"``
                (default: told from its last layer, see
                :class:`PosteriorEnsemble`).
            noise_variance: for regression, ``None`` when the sampled model
                outputs ``[mean, log variance]``, else the fixed noise
                variance of a mean-only model.
            model: the architecture to fill with the samples; defaults to the
                model the callback was trained with (cloned, not changed).
            last: use only the ``last`` most recent samples.

        Returns:
            A :class:`PosteriorEnsemble` of clones of ``model``, one per sample.

        Example:
        >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        >>> model.compile(tfpriors.distill.SGLD(1e-4, dataset_size=256),
        ...               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> sampler = tfpriors.distill.PosteriorSampler(burn_in_epochs=0, thin=2, in_memory=10)
        >>> history = model.fit(x[:256], y[:256], batch_size=64, callbacks=[sampler], verbose=0)
        >>> teacher = sampler.ensemble()
        >>> len(teacher.members)
        2
        >>> log_probs = teacher.predict(x_test[:4], verbose=0)
        >>> np.allclose(np.exp(log_probs).sum(axis=-1), 1.0, atol=1e-5)
        True
        """
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("`model` is needed: this sampler was not used in `fit`.")
        if not self._records:
            raise ValueError(
                "The sampler holds no samples yet: train past `burn_in_epochs` "
                f"({self.burn_in_epochs}) for at least `thin` ({self.thin}) "
                "steps."
            )
        samples = list(self.samples())
        if last is not None:
            samples = samples[-_validation.positive_int(last, "last") :]
        members = []
        for weights in samples:
            # copy_layer: Lambda layers and function activations without a config round trip.
            member = keras.models.clone_model(model, clone_function=copy_layer)
            member.set_weights(weights)
            members.append(member)
        return PosteriorEnsemble(members, task=task, output=output, noise_variance=noise_variance)


@keras.saving.register_keras_serializable(package="tfpriors")
class PosteriorEnsemble(FloatInputs, keras.Model):
    """Merges member models into one predictive distribution.

    Classification: ``log(mean_k softmax(member_k(x)))`` (log-mean-prob).
    Regression: ``[mean, log variance]`` of the equal-weight Gaussian mixture
    of the members (mean of means; mean of variances plus variance of means).
    Made by :meth:`PosteriorSampler.ensemble`; also usable on any list of
    models (a deep ensemble).

    Args:
        members: Keras models with the same input and output shapes.
        task: ``"classification"`` or ``"regression"``.
        output: classification members' output: ``"logits"``, ``"log_probs"``,
            ``"probs"``, or ``"auto"`` (default): probabilities for a member
            whose last layer is a softmax, logits for one ending in a layer
            without activation, else decided per batch (probabilities when
            every row is non-negative and sums to 1).
        noise_variance: regression members' fixed noise variance, or ``None``
            when they output ``[mean, log variance]``.

    Example:
    >>> def member():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> teacher = tfpriors.distill.PosteriorEnsemble([member(), member()])
    >>> log_probs = teacher(np.random.rand(2, 4).astype("float32"))
    >>> log_probs.shape
    TensorShape([2, 3])
    >>> np.allclose(np.exp(log_probs).sum(axis=-1), 1.0, atol=1e-6)
    True
    """

    def __init__(
        self, members, task="classification", output="auto", noise_variance=None, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(members, (list, tuple)):
            raise TypeError(
                f"`members` must be a list of Keras models; received {type(members).__name__}."
            )
        members = list(members)
        if not members or not all(isinstance(m, keras.Model) for m in members):
            raise ValueError(
                f"`members` must be a non-empty list of Keras models; received {members!r}."
            )
        self.members = members
        self.task = _validation.one_of(task, "task", TASKS)
        self.member_output = _validation.one_of(output, "output", losses.OUTPUT_CHOICES)
        # How each member's output is read (a softmax member: probabilities).
        self._member_readings = [
            losses.output_reading(member, self.member_output, "output", f"member {i}")
            if self.task == "classification"
            else self.member_output
            for i, member in enumerate(members)
        ]
        self.noise_variance = (
            None
            if noise_variance is None
            else _validation.positive_number(noise_variance, "noise_variance")
        )

    def call(self, inputs):
        outputs = [member(inputs, training=False) for member in self.members]
        count = float(len(outputs))
        if self.task == "classification":
            log_probs = tf.stack(
                [
                    losses.as_log_probs(o, reading)
                    for o, reading in zip(outputs, self._member_readings)
                ]
            )
            return tf.reduce_logsumexp(log_probs, axis=0) - math.log(count)
        means, log_vars = zip(*(losses.split_gaussian(o, self.noise_variance) for o in outputs))
        means, variances = tf.stack(means), tf.exp(tf.stack(log_vars))
        mean = tf.reduce_mean(means, axis=0)
        # Written as a sum of non-negative terms: E[v] + E[m^2] - E[m]^2 can
        # cancel to a negative number in float32.
        variance = tf.reduce_mean(variances, axis=0) + tf.reduce_mean(
            tf.square(means - mean), axis=0
        )
        return tf.concat([mean, tf.math.log(variance)], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "members": [keras.saving.serialize_keras_object(m) for m in self.members],
                "task": self.task,
                "output": self.member_output,
                "noise_variance": self.noise_variance,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["members"] = [
            keras.saving.deserialize_keras_object(m, custom_objects) for m in config["members"]
        ]
        return cls(**config)
