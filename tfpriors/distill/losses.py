"""Likelihoods and divergences shared by the SGLD teacher and the distilled student.

Model output conventions used throughout :mod:`tfpriors.distill`:

- classification: the last axis holds ``num_classes`` logits (or log
  probabilities, which are logits too), or probabilities where a model ends
  in a softmax. Where tfpriors reads a classifier's output (``output=``,
  ``teacher_output=``, and the student of a distiller), ``"auto"`` tells
  which by the rule of ``tfpriors.calibration``: a model whose last layer is
  a softmax outputs probabilities, one ending in a layer without activation
  logits; otherwise each batch's rows decide (probabilities when all are
  non-negative and sum to 1, else logits).
- regression with learned noise: the last axis holds ``2 * d`` values, the
  predictive means of the ``d`` targets followed by their log variances.
- regression with fixed noise: the last axis holds the ``d`` means; the noise
  variance is given separately (``noise_variance=``).
"""

import math

import keras
import tensorflow as tf

from tfpriors import _probabilities, _validation

CLASSIFICATION_OUTPUTS = ("logits", "log_probs", "probs")
# What `output=` / `teacher_output=` accept: the above, or told from the model.
OUTPUT_CHOICES = ("auto",) + CLASSIFICATION_OUTPUTS
# Log-variances are clipped to this range: exp() of a wild untrained output
# would otherwise overflow the Gaussian NLL to inf.
LOG_VAR_RANGE = (-20.0, 20.0)


def as_log_probs(values, output):
    """Log probabilities from logits, log probabilities or probabilities.

    ``output="auto"`` reads the batch as probabilities when all its rows
    are probability vectors, else as logits.
    """
    if output == "probs":
        return tf.math.log(tf.clip_by_value(values, 1e-12, 1.0))
    if output == "auto":
        values = tf.convert_to_tensor(values)
        num_classes = values.shape[-1] if values.shape.rank else None
        tolerance = _probabilities.probability_tolerance(values.dtype, num_classes or 1)
        probabilities = tf.logical_and(
            tf.reduce_all(values >= 0),
            tf.reduce_all(tf.abs(tf.reduce_sum(values, axis=-1) - 1.0) <= tolerance),
        )
        return tf.where(
            probabilities,
            tf.math.log(tf.clip_by_value(values, 1e-12, 1.0)),
            tf.nn.log_softmax(values, axis=-1),
        )
    return tf.nn.log_softmax(values, axis=-1)


def output_reading(model, output, name, model_name):
    """How to read a classifier's outputs: ``"logits"``, ``"log_probs"``, ``"probs"`` or ``"auto"``.

    ``output="auto"`` becomes what the model's last layer says (see
    ``tfpriors._probabilities``), or stays ``"auto"`` (each batch's rows
    decide) when the model does not tell.

    Raises:
        ValueError: for an ``output`` not in :data:`OUTPUT_CHOICES`; for
            ``"logits"`` or ``"log_probs"`` on a model that ends in a
            softmax, and ``"probs"`` on one that ends in a layer without
            activation.
    """
    output = _validation.one_of(output, name, OUTPUT_CHOICES)
    kind = _probabilities.model_output_kind(model)
    label = f"{model_name} {getattr(model, 'name', '')!r}"
    if kind == "probabilities" and output in ("logits", "log_probs"):
        raise ValueError(
            f'`{name}="{output}"`, but {label} ends in a softmax, so it outputs '
            "probabilities; reading them as logits would flatten them. Pass "
            f'`{name}="probs"` or `{name}="auto"`.'
        )
    if kind == "logits" and output == "probs":
        raise ValueError(
            f'`{name}="probs"`, but {label} ends in a layer without activation, '
            f'so it outputs logits, not probabilities. Pass `{name}="logits"` or '
            f'`{name}="auto"`.'
        )
    if output == "auto" and kind is not None:
        return "probs" if kind == "probabilities" else "logits"
    return output


def split_gaussian(values, noise_variance=None):
    """``(mean, log_var)`` from a regression output (see the module conventions)."""
    if noise_variance is None:
        mean, log_var = tf.split(values, 2, axis=-1)
        return mean, tf.clip_by_value(log_var, *LOG_VAR_RANGE)
    return values, tf.fill(tf.shape(values), tf.cast(math.log(noise_variance), values.dtype))


def gaussian_kl(mean_p, log_var_p, mean_q, log_var_q):
    """KL(N(mean_p, var_p) || N(mean_q, var_q)), summed over the last axis."""
    ratio = tf.exp(log_var_p - log_var_q)
    return 0.5 * tf.reduce_sum(
        log_var_q - log_var_p + ratio + tf.square(mean_p - mean_q) * tf.exp(-log_var_q) - 1.0,
        axis=-1,
    )


def gaussian_nll_values(y_true, mean, log_var):
    """Per-example Gaussian negative log-likelihood, summed over the last axis."""
    y_true = tf.cast(y_true, mean.dtype)
    if (
        y_true.shape.is_fully_defined()
        and mean.shape.is_fully_defined()
        and y_true.shape.num_elements() != mean.shape.num_elements()
    ):
        raise ValueError(
            f"`y_true` of shape {tuple(y_true.shape)} does not match the predicted "
            f"mean of shape {tuple(mean.shape)}: `y_pred` holds the mean (with "
            "`noise_variance` set) or the mean and log-variance (with "
            "`noise_variance=None`)."
        )
    y_true = tf.reshape(y_true, tf.shape(mean))
    return 0.5 * tf.reduce_sum(
        math.log(2 * math.pi) + log_var + tf.square(y_true - mean) * tf.exp(-log_var), axis=-1
    )


def categorical_kl(teacher_log_probs, student_log_probs):
    """KL(teacher || student) per example: sum_c p_t (log p_t - log p_s)."""
    return tf.reduce_sum(
        tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1
    )


@keras.saving.register_keras_serializable(package="tfpriors")
class GaussianNLL(keras.losses.Loss):
    """Gaussian negative log-likelihood of regression targets (the SGLD likelihood).

    With ``noise_variance=None`` the model outputs ``2 * d`` values (means,
    then log variances: learned, input-dependent noise); otherwise it outputs
    the ``d`` means and the noise variance is fixed. Mean-reduced over the
    batch, as the SGLD loss convention asks.

    Args:
        noise_variance: ``None`` (learned) or the fixed noise variance (> 0).

    Example:
    >>> loss = tfpriors.distill.GaussianNLL()  # y_pred: [mean, log variance]
    >>> y_true = np.array([[0.0], [1.0]], "float32")
    >>> round(float(loss(y_true, np.array([[0.0, 0.0], [1.0, 0.0]], "float32"))), 4)
    0.9189
    >>> fixed = tfpriors.distill.GaussianNLL(noise_variance=1.0)  # y_pred: the mean only
    >>> round(float(fixed(y_true, np.array([[0.0], [1.0]], "float32"))), 4)
    0.9189
    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(50, "relu"),
    ...                           keras.layers.Dense(2)])  # mean, log variance
    >>> model.compile(tfpriors.distill.SGLD(1e-4, dataset_size=1000),
    ...               tfpriors.distill.GaussianNLL())
    """

    def __init__(self, noise_variance=None, name="gaussian_nll", **kwargs):
        super().__init__(name=name, **kwargs)
        self.noise_variance = (
            None
            if noise_variance is None
            else _validation.positive_number(noise_variance, "noise_variance")
        )

    def call(self, y_true, y_pred):
        mean, log_var = split_gaussian(y_pred, self.noise_variance)
        return gaussian_nll_values(y_true, mean, log_var)

    def get_config(self):
        config = super().get_config()
        config["noise_variance"] = self.noise_variance
        return config
