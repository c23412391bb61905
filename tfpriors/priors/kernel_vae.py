"""A variational autoencoder over k x k convolution kernel slices (Deep Weight Prior).

The Deep Weight Prior (Atanov et al., 2019) is the marginal
``p(w) = ∫ p(w|z) p(z) dz`` of a VAE trained on the kernels of source
networks; one VAE serves every layer with that kernel size.
"""

import base64
import math

import keras
import numpy as np
from keras import ops

from tfpriors import _validation
from tfpriors._inputs import FloatInputs

_LOG_2PI = math.log(2.0 * math.pi)
# Bounds of the encoder's log-variance: keep exp() finite early in training.
_LATENT_LOG_VARIANCE = (-12.0, 6.0)


@keras.saving.register_keras_serializable(package="tfpriors")
class KernelVAE(FloatInputs, keras.Model):
    """VAE over ``k x k`` kernel slices: encoder ``r(z|w)``, decoder ``p(w|z)``, prior ``N(0, I)``.

    Encoder and decoder are small MLPs (a 3x3 slice is 9 numbers; convolutions
    buy nothing at that size). Both output a mean and a diagonal log-variance:
    the decoder's variance is learned, bounded below by
    ``exp(min_log_variance)``.

    It is an ordinary Keras model: ``compile("adam")`` / ``fit(kernels)`` /
    ``save`` / ``load_model``. Its training loss is the negative ELBO per
    slice, ``KL(r(z|w) || p(z)) - log p(w|z)`` with one reparameterized
    ``z ~ r(z|w)``. Calling it on kernels returns each slice's negative ELBO
    (with a sampled ``z`` in training, at the encoder mean otherwise).

    Args:
        kernel_size: the side ``k`` of the square kernel slices, a positive int.
        latent_dim: dimension of ``z``, a positive int.
        hidden_units: width of the two hidden layers of encoder and decoder.
        min_log_variance: floor of the decoder's log-variance.
        seed: seed of the latent noise in training.

        **kwargs: base ``keras.Model`` arguments (``name``).

    Example:
    >>> source = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3)])
    >>> kernels = tfpriors.priors.collect_kernels([source], kernel_size=3)
    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3, latent_dim=2)
    >>> vae.compile("adam")
    >>> history = vae.fit(kernels, epochs=2, batch_size=8, verbose=0)
    >>> vae(kernels).shape  # the negative ELBO of each slice
    TensorShape([16])
    >>> vae.sample(4).shape
    (4, 3, 3)
    >>> vae.save("vae.keras")
    >>> restored = keras.saving.load_model("vae.keras")
    >>> bool(np.allclose(restored(kernels), vae(kernels)))
    True
    """

    def __init__(
        self,
        kernel_size=3,
        latent_dim=2,
        hidden_units=64,
        min_log_variance=-12.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = _validation.positive_int(kernel_size, "kernel_size")
        self.latent_dim = _validation.positive_int(latent_dim, "latent_dim")
        self.hidden_units = _validation.positive_int(hidden_units, "hidden_units")
        self.min_log_variance = _validation.real_number(min_log_variance, "min_log_variance")
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        k, h = self.kernel_size, self.hidden_units
        self.encoder = keras.Sequential(
            [
                keras.Input((k, k)),
                keras.layers.Flatten(),
                keras.layers.Dense(h, activation="elu"),
                keras.layers.Dense(h, activation="elu"),
                keras.layers.Dense(2 * self.latent_dim),
            ],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [
                keras.Input((self.latent_dim,)),
                keras.layers.Dense(h, activation="elu"),
                keras.layers.Dense(h, activation="elu"),
                keras.layers.Dense(2 * k * k),
            ],
            name="decoder",
        )

    def build(self, input_shape=None):
        # Encoder and decoder are built in __init__: nothing depends on the input.
        self.built = True

    def _check_kernels(self, kernels, name="kernels"):
        shape = tuple(kernels.shape)
        k = self.kernel_size
        if len(shape) == 4 and shape[-1] == 1:
            kernels = ops.reshape(kernels, (-1, k, k))
            shape = shape[:3]
        if len(shape) != 3 or tuple(shape[1:]) != (k, k):
            raise ValueError(
                f"`{name}` must have shape (n, {k}, {k}) (or (n, {k}, {k}, 1)) "
                f"for this KernelVAE(kernel_size={k}); received shape {shape}."
            )
        return ops.cast(kernels, "float32")

    def encode(self, kernels):
        """``r(z|w)``: the latent mean and log-variance, each ``(n, latent_dim)``."""
        stats = self.encoder(self._check_kernels(kernels))
        z_mean, z_log_variance = ops.split(stats, 2, axis=-1)
        return z_mean, ops.clip(z_log_variance, *_LATENT_LOG_VARIANCE)

    def decode(self, z):
        """``p(w|z)``: the kernel mean and log-variance, each ``(n, k, k)``."""
        k = self.kernel_size
        stats = self.decoder(ops.cast(z, "float32"))
        w_mean, w_log_variance = ops.split(stats, 2, axis=-1)
        # softplus keeps the floor smooth, so the gradient never stops at it.
        w_log_variance = self.min_log_variance + ops.softplus(
            w_log_variance - self.min_log_variance
        )
        return ops.reshape(w_mean, (-1, k, k)), ops.reshape(w_log_variance, (-1, k, k))

    def negative_elbo(self, kernels, sample=True, seed=None):
        """``KL(r(z|w) || N(0, I)) - log p(w|z)`` per slice, shape ``(n,)``.

        Args:
            kernels: ``(n, k, k)`` slices.
            sample: draw one ``z ~ r(z|w)`` (reparameterized); else use its mean.
            seed: a ``keras.random.SeedGenerator`` (the model's own by default).
        """
        kernels = self._check_kernels(kernels)
        z_mean, z_log_variance = self.encode(kernels)
        z = z_mean
        if sample:
            noise = keras.random.normal(
                ops.shape(z_mean), seed=self.seed_generator if seed is None else seed
            )
            z = z_mean + ops.exp(0.5 * z_log_variance) * noise
        w_mean, w_log_variance = self.decode(z)
        log_likelihood = -0.5 * ops.sum(
            _LOG_2PI + w_log_variance + ops.square(kernels - w_mean) * ops.exp(-w_log_variance),
            axis=(1, 2),
        )
        kl = 0.5 * ops.sum(
            ops.exp(z_log_variance) + ops.square(z_mean) - 1.0 - z_log_variance, axis=-1
        )
        return kl - log_likelihood

    def call(self, inputs, training=False):
        return self.negative_elbo(self._check_kernels(inputs, "inputs"), sample=bool(training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = ops.mean(y_pred)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def sample(self, num_kernels, seed=None):
        """Kernels from the decoder mean at ``z ~ N(0, I)``, NumPy ``(num_kernels, k, k)``."""
        num_kernels = _validation.positive_int(num_kernels, "num_kernels")
        z = keras.random.normal(
            (num_kernels, self.latent_dim), seed=self.seed_generator if seed is None else seed
        )
        return ops.convert_to_numpy(self.decode(z)[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units,
                "min_log_variance": self.min_log_variance,
                "seed": self.seed,
            }
        )
        return config


def check_vae(vae, name="vae"):
    """Returns ``vae`` if it is a :class:`KernelVAE`, else raises a TypeError naming ``name``."""
    if not isinstance(vae, KernelVAE):
        raise TypeError(
            f"`{name}` must be a tfpriors.priors.KernelVAE; received {type(vae).__name__}."
        )
    return vae


def check_kernel_shape(shape, kernel_size, where):
    """Checks that ``shape`` is a 2D conv kernel ``(k, k, in, out)`` with ``k == kernel_size``."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{where}: `shape` must be a kernel shape (kh, kw, in_channels, "
            f"filters); received {shape!r}."
        ) from None
    if len(shape) != 4:
        raise ValueError(
            f"{where} needs a 2D convolution kernel (kh, kw, in_channels, "
            f"filters); received a kernel of shape {shape}."
        )
    if shape[0] != shape[1]:
        raise ValueError(
            f"{where} needs a square kernel: `kernel_size` must be "
            f"({kernel_size}, {kernel_size}); received {shape[:2]}."
        )
    if shape[0] != kernel_size:
        raise ValueError(
            f"`kernel_size` {shape[:2]} does not match the prior's KernelVAE "
            f"(kernel_size={kernel_size}) in {where}; train a KernelVAE on "
            f"{shape[0]}x{shape[0]} kernels for this layer."
        )
    return shape


def kernel_slices(kernel):
    """``(k, k, in, out)`` -> ``(in * out, k, k)``: one slice per (input, output) channel pair."""
    k = kernel.shape[0]
    return ops.reshape(ops.transpose(kernel, (2, 3, 0, 1)), (-1, k, k))


def vae_to_config(vae):
    """A JSON-friendly copy of a KernelVAE: its config and its weights (base64 float32)."""
    check_vae(vae)
    return {
        "model": keras.saving.serialize_keras_object(vae),
        "weights": [
            {
                "shape": list(w.shape),
                "data": base64.b64encode(np.ascontiguousarray(w, "<f4").tobytes()).decode("ascii"),
            }
            for w in _network_weights(vae)
        ],
    }


def vae_from_config(config):
    """Inverse of :func:`vae_to_config`."""
    try:
        vae = keras.saving.deserialize_keras_object(config["model"])
        weights = [
            np.frombuffer(base64.b64decode(w["data"]), "<f4").reshape(w["shape"])
            for w in config["weights"]
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            "`config` is not a serialized KernelVAE (expected the keys "
            f"'model' and 'weights'): {error}"
        ) from error
    check_vae(vae)
    networks = (vae.encoder, vae.decoder)
    sizes = [len(network.weights) for network in networks]
    if len(weights) != sum(sizes):
        raise ValueError(
            f"`config` holds {len(weights)} weight arrays; its KernelVAE has {sum(sizes)}."
        )
    vae.encoder.set_weights(weights[: sizes[0]])
    vae.decoder.set_weights(weights[sizes[0] :])
    return vae


def _network_weights(vae):
    # Encoder and decoder only: the seed generator's state is not part of the prior.
    return vae.encoder.get_weights() + vae.decoder.get_weights()
