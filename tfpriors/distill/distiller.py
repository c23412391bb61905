"""Distillation of a (Bayesian) teacher into one student network: offline and online."""

import keras
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution

from tfpriors import _validation
from tfpriors._inputs import FloatInputs
from tfpriors.distill import losses
from tfpriors.distill.optimizers import SGHMC, SGLD
from tfpriors.distill.sampler import TASKS


def _weighted_mean(values, sample_weight=None):
    if sample_weight is None:
        return tf.reduce_mean(values)
    weight = tf.reshape(tf.cast(sample_weight, values.dtype), tf.shape(values))
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1e-12)


def _check_model(value, name):
    if not isinstance(value, keras.Model):
        raise TypeError(f"`{name}` must be a keras.Model; received {type(value).__name__}.")
    return value


def _hard_label_nll(y, student_out, task, output="logits"):
    """Per-example NLL of the labels under a model's output.

    ``output`` says how to read a classifier's output (see
    :func:`losses.as_log_probs`); a regression output is ``[mean, log_var]``.
    """
    if task == "regression":
        mean, log_var = losses.split_gaussian(student_out)
        return losses.gaussian_nll_values(y, mean, log_var)
    y = tf.convert_to_tensor(y)
    log_probs = losses.as_log_probs(student_out, output)
    if (
        y.shape.rank == student_out.shape.rank
        and y.shape[-1] == student_out.shape[-1]
        and student_out.shape[-1] != 1
    ):
        return -tf.reduce_sum(tf.cast(y, log_probs.dtype) * log_probs, axis=-1)
    labels = tf.reshape(tf.cast(y, "int32"), tf.shape(log_probs)[:-1])
    return -tf.gather(log_probs, labels, axis=-1, batch_dims=log_probs.shape.rank - 1)


class _DistillMixin:
    """What Distiller and BayesianDarkKnowledge share.

    The teacher -> student divergence, and predicting with the student.
    """

    def _divergence(self, teacher_out, student_out):
        """Per-example KL(teacher || student); times T^2 at temperature T (classification)."""
        teacher_out = tf.stop_gradient(teacher_out)
        if self.task == "regression":
            t_mean, t_log_var = losses.split_gaussian(teacher_out, self.teacher_noise_variance)
            s_mean, s_log_var = losses.split_gaussian(student_out)
            return losses.gaussian_kl(t_mean, t_log_var, s_mean, s_log_var)
        t = self.temperature
        teacher_log_probs = tf.nn.log_softmax(
            losses.as_log_probs(teacher_out, self._teacher_reading) / t, axis=-1
        )
        if self._student_reading != "logits":
            student_out = losses.as_log_probs(student_out, self._student_reading)
        student_log_probs = tf.nn.log_softmax(student_out / t, axis=-1)
        return losses.categorical_kl(teacher_log_probs, student_log_probs) * (t * t)

    # The wrapper model predicts with its student: what it deploys.
    def build(self, input_shape):
        if not self.student.built:
            self.student.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)


def _common_args(obj, task, temperature, teacher_output, teacher_noise_variance, names):
    """Checks and sets the arguments both distillers share.

    ``names`` are the argument names of the teacher and the student models,
    for messages.
    """
    obj.task = _validation.one_of(task, "task", TASKS)
    obj.temperature = _validation.positive_number(temperature, "temperature")
    obj.teacher_output = _validation.one_of(teacher_output, "teacher_output", losses.OUTPUT_CHOICES)
    obj.teacher_noise_variance = (
        None
        if teacher_noise_variance is None
        else _validation.positive_number(teacher_noise_variance, "teacher_noise_variance")
    )
    # How the classifiers' outputs are read: told from their last layers
    # where "auto" (a softmax: probabilities), else each batch's rows decide.
    obj._teacher_reading = obj._student_reading = "logits"
    if obj.task == "classification":
        obj._teacher_reading = losses.output_reading(
            obj.teacher, obj.teacher_output, "teacher_output", f"`{names[0]}`"
        )
        obj._student_reading = losses.output_reading(
            obj.student, "auto", "student output", f"`{names[1]}`"
        )


@keras.saving.register_keras_serializable(package="tfpriors")
class Distiller(FloatInputs, _DistillMixin, keras.Model):
    """Trains ``student`` to match a fixed teacher's predictive distribution.

    Classification loss per example, at temperature ``T``::

        KL(p_teacher_T || p_student_T) * T**2 + alpha * CE(y, p_student)

    with ``p_T = softmax(logits / T)``. The KL runs *from the teacher to the
    student*: ``sum_c p_teacher (log p_teacher - log p_student)``, whose
    gradient for the student is that of the cross-entropy to the teacher's
    soft labels (the reverse direction would be mode-seeking and ignore the
    teacher's doubt). ``T**2`` keeps the soft-label gradients on the scale of
    the hard-label ones (Hinton et al.). The hard-label term is added only
    when ``fit`` gets labels; ``fit(x)`` distils on unlabeled inputs.

    Regression: the student outputs ``[mean, log variance]`` and the loss is
    ``KL(N_teacher || N_student)`` where ``N_teacher`` is the Gaussian with
    the teacher mixture's mean and variance (``PosteriorEnsemble`` outputs
    exactly that). For a Gaussian student this equals KL(teacher mixture ||
    student) up to a constant, so the student's best fit is the teacher's
    moment-matched predictive. ``alpha`` weighs the Gaussian NLL of labels;
    ``temperature`` does not apply.

    The teacher is frozen (``teacher.trainable = False``) and run in
    inference mode. It may be any Keras model: a ``PosteriorEnsemble`` of SGLD
    samples, a deep ensemble, a single network.

    Args:
        student: the Keras model to train (outputs logits, or probabilities
            when it ends in a softmax; ``[mean, log variance]`` for regression).
        teacher: the Keras model to imitate.
        temperature: ``T`` (> 0), classification only.
        alpha: weight (>= 0) of the hard-label term.
        task: ``"classification"`` or ``"regression"``.
        teacher_output: what a classification teacher outputs: ``"logits"``,
            ``"log_probs"`` (a ``PosteriorEnsemble``), ``"probs"``, or
            ``"auto"`` (default): probabilities when its last layer is a
            softmax, logits when it is a layer without activation, else
            decided per batch (probabilities when every row is non-negative
            and sums to 1).
        teacher_noise_variance: a regression teacher's fixed noise variance
            when it outputs means only; ``None`` when it outputs
            ``[mean, log variance]``.

    Example:
    >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
    ...                             keras.layers.Dense(10)])  # e.g. sampler.ensemble()
    >>> student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
    ...                             keras.layers.Dense(10)])
    >>> distiller = tfpriors.distill.Distiller(student, teacher, temperature=4.0, alpha=0.1)
    >>> distiller.compile("adam")
    >>> history = distiller.fit(x[:256], epochs=1, batch_size=64, verbose=0)  # or fit(x, y)
    >>> student.predict(x_test[:5], verbose=0).shape
    (5, 10)
    >>> teacher.trainable
    False
    """

    def __init__(
        self,
        student,
        teacher,
        temperature=4.0,
        alpha=0.1,
        task="classification",
        teacher_output="auto",
        teacher_noise_variance=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.student = _check_model(student, "student")
        self.teacher = _check_model(teacher, "teacher")
        _common_args(
            self,
            task,
            temperature,
            teacher_output,
            teacher_noise_variance,
            ("teacher", "student"),
        )
        self.alpha = _validation.real_number(alpha, "alpha", minimum=0.0)
        self.teacher.trainable = False

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        per_example = self._divergence(self.teacher(x, training=False), y_pred)
        if y is not None and self.alpha > 0:
            per_example += self.alpha * _hard_label_nll(y, y_pred, self.task, self._student_reading)
        loss = scale_loss_for_distribution(_weighted_mean(per_example, sample_weight))
        for extra in self.student.losses:
            loss += self._aggregate_additional_loss(extra)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "temperature": self.temperature,
                "alpha": self.alpha,
                "task": self.task,
                "teacher_output": self.teacher_output,
                "teacher_noise_variance": self.teacher_noise_variance,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects)
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfpriors")
class BayesianDarkKnowledge(FloatInputs, _DistillMixin, keras.Model):
    """Online Bayesian dark knowledge (Balan et al., 2015) in one ``fit``.

    Each training step on a batch ``(x, y)``:

    1. one SGLD (or SGHMC) step of the teacher on ``(x, y)``: its loss is
       the mean NLL plus ``teacher_model.losses`` (priors as regularizers
       scaled by ``1/N``, see :func:`tfpriors.distill.gaussian_prior`), the
       convention of :class:`tfpriors.distill.SGLD`;
    2. one step of the student (the optimizer given to ``compile``) on a
       fresh batch ``x + input_noise * Normal(0, 1)``, minimizing
       ``KL(teacher || student)`` against the teacher's *current* sample
       (classification: at ``temperature``, times ``T**2``; regression: the
       Gaussian KL of :class:`Distiller`). Averaged over the SGLD chain, the
       student learns the posterior predictive distribution.

    During the first ``burn_in_steps`` teacher steps the student's loss is
    weighted by 0. ``model(x)`` and ``predict`` run the student; after
    ``fit`` use ``bdk.student``. The logged ``teacher_nll`` is the teacher's
    data NLL, ``loss`` the student's divergence.

    Args:
        teacher_model: network sampled by SGLD (logits, or probabilities
            when it ends in a softmax; ``[mean, log variance]`` / means with
            ``teacher_noise_variance`` for regression).
        student_model: network trained to match it (logits, or probabilities
            when it ends in a softmax; ``[mean, log variance]``).
        dataset_size: ``N``, the number of training examples (> 0).
        task: ``"classification"`` or ``"regression"``.
        teacher_optimizer: an ``SGLD`` / ``SGHMC`` (or any Keras optimizer);
            defaults to ``SGLD(teacher_learning_rate, dataset_size)``.
        teacher_learning_rate: learning rate of the default SGLD.
        input_noise: standard deviation (>= 0) of the Gaussian input noise
            of the student's batch.
        temperature: ``T`` (> 0) of the classification divergence.
        teacher_noise_variance: fixed noise variance of a mean-only
            regression teacher.
        burn_in_steps: teacher steps (>= 0) before the student learns.

    Example:
    >>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
    >>> x, y = x[:256], y[:256]
    >>> teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
    ...                             keras.layers.Dense(10)])
    >>> student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
    ...                             keras.layers.Dense(10)])
    >>> bdk = tfpriors.distill.BayesianDarkKnowledge(teacher, student,
    ...                                              dataset_size=len(x))
    >>> bdk.compile(keras.optimizers.Adam(1e-3))
    >>> history = bdk.fit(x, y, epochs=1, batch_size=64, verbose=0)
    >>> sorted(history.history)
    ['loss', 'teacher_nll']
    >>> bdk.student.predict(x_test[:5], verbose=0).shape
    (5, 10)
    """

    def __init__(
        self,
        teacher_model,
        student_model,
        dataset_size=None,
        task="classification",
        teacher_optimizer=None,
        teacher_learning_rate=1e-4,
        input_noise=0.05,
        temperature=1.0,
        teacher_noise_variance=None,
        burn_in_steps=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.teacher = _check_model(teacher_model, "teacher_model")
        self.student = _check_model(student_model, "student_model")
        self.dataset_size = _validation.positive_int(dataset_size, "dataset_size")
        _common_args(
            self,
            task,
            temperature,
            "auto",
            teacher_noise_variance,
            ("teacher_model", "student_model"),
        )
        self.input_noise = _validation.real_number(input_noise, "input_noise", minimum=0.0)
        if (
            isinstance(burn_in_steps, bool)
            or not isinstance(burn_in_steps, int)
            or burn_in_steps < 0
        ):
            raise ValueError(
                f"`burn_in_steps` must be an integer >= 0; received {burn_in_steps!r}."
            )
        self.burn_in_steps = burn_in_steps
        if teacher_optimizer is None:
            teacher_optimizer = SGLD(
                _validation.positive_number(teacher_learning_rate, "teacher_learning_rate"),
                dataset_size=self.dataset_size,
            )
        elif not isinstance(teacher_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"`teacher_optimizer` must be a keras optimizer (SGLD, SGHMC); "
                f"received {type(teacher_optimizer).__name__}."
            )
        elif (
            isinstance(teacher_optimizer, (SGLD, SGHMC))
            and teacher_optimizer.dataset_size != self.dataset_size
        ):
            raise ValueError(
                f"`teacher_optimizer.dataset_size` "
                f"({teacher_optimizer.dataset_size}) differs from "
                f"`dataset_size` ({self.dataset_size})."
            )
        self.teacher_optimizer = teacher_optimizer
        self._student_tracker = keras.metrics.Mean(name="loss")
        self._teacher_tracker = keras.metrics.Mean(name="teacher_nll")
        self._student_nll_tracker = keras.metrics.Mean(name="student_nll")

    def compile(self, optimizer="adam", **kwargs):
        """Compiles with the student's ``optimizer`` and builds the teacher's."""
        super().compile(optimizer=optimizer, **kwargs)
        self.teacher_optimizer.build(self.teacher.trainable_variables)

    @property
    def metrics(self):
        return [self._student_tracker, self._teacher_tracker, self._student_nll_tracker]

    def _teacher_nll(self, y, teacher_out):
        if self.task == "regression":
            mean, log_var = losses.split_gaussian(teacher_out, self.teacher_noise_variance)
            return losses.gaussian_nll_values(y, mean, log_var)
        return _hard_label_nll(y, teacher_out, "classification", self._teacher_reading)

    def _extra(self, model):
        return sum(
            (self._aggregate_additional_loss(loss) for loss in model.losses), tf.constant(0.0)
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                "BayesianDarkKnowledge.fit needs labels `y`: the teacher is "
                "sampled from the posterior given (x, y)."
            )
        with tf.GradientTape() as tape:
            teacher_nll = _weighted_mean(
                self._teacher_nll(y, self.teacher(x, training=True)), sample_weight
            )
            teacher_loss = scale_loss_for_distribution(teacher_nll) + self._extra(self.teacher)
        variables = self.teacher.trainable_variables
        self.teacher_optimizer.apply(tape.gradient(teacher_loss, variables), variables)

        noisy = tf.nest.map_structure(
            lambda v: v + self.input_noise * tf.random.normal(tf.shape(v), dtype=v.dtype), x
        )
        teacher_out = self.teacher(noisy, training=False)
        active = tf.cast(self.teacher_optimizer.iterations > self.burn_in_steps, "float32")
        with tf.GradientTape() as tape:
            student_out = self.student(noisy, training=True)
            divergence = _weighted_mean(self._divergence(teacher_out, student_out), sample_weight)
            student_loss = active * (
                scale_loss_for_distribution(divergence) + self._extra(self.student)
            )
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(student_loss, variables), variables)
        self._student_tracker.update_state(divergence)
        self._teacher_tracker.update_state(teacher_nll)
        return {m.name: m.result() for m in self.metrics[:2]}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        student_out = self.student(x, training=False)
        self._student_tracker.update_state(
            _weighted_mean(
                self._divergence(self.teacher(x, training=False), student_out), sample_weight
            )
        )
        if y is None:
            return {"loss": self._student_tracker.result()}
        self._teacher_tracker.update_state(
            _weighted_mean(self._teacher_nll(y, self.teacher(x, training=False)), sample_weight)
        )
        self._student_nll_tracker.update_state(
            _weighted_mean(
                _hard_label_nll(y, student_out, self.task, self._student_reading),
                sample_weight,
            )
        )
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_model": keras.saving.serialize_keras_object(self.teacher),
                "student_model": keras.saving.serialize_keras_object(self.student),
                "dataset_size": self.dataset_size,
                "task": self.task,
                "teacher_optimizer": keras.saving.serialize_keras_object(self.teacher_optimizer),
                "input_noise": self.input_noise,
                "temperature": self.temperature,
                "teacher_noise_variance": self.teacher_noise_variance,
                "burn_in_steps": self.burn_in_steps,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("teacher_model", "student_model", "teacher_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects)
        return cls(**config)
