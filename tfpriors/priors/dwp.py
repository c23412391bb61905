"""The Deep Weight Prior (Atanov, Ashukha, Struminsky, Vetrov & Welling, ICLR 2019).

The prior over each ``k x k`` slice of a conv kernel is the marginal of a
:class:`KernelVAE` trained on source networks' kernels,
``p(w) = ∫ p(w|z) p(z) dz``. Its KL from the Gaussian posterior ``q(w)`` has
no closed form; the auxiliary bound with the VAE's encoder ``r(z|w)`` frozen,

``KL(q || p) <= -H(q) + E_q(w) [ KL(r(z|w) || p(z)) - E_r(z|w) log p(w|z) ]``,

is estimated with one reparameterized ``w ~ q`` and one ``z ~ r(z|w)`` per
slice, batched over all ``in_channels * filters`` slices of the layer.
"""

import math

import keras
from keras import ops

from tfpriors import _validation
from tfpriors.priors.base import Prior
from tfpriors.priors.kernel_vae import (
    check_kernel_shape,
    check_vae,
    kernel_slices,
    vae_from_config,
    vae_to_config,
)

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


@keras.saving.register_keras_serializable(package="tfpriors")
class DeepWeightPrior(Prior):
    """Learned prior over conv kernel slices, given by a trained :class:`KernelVAE`.

    ``kl(mean, log_sigma2)`` takes a 2D conv kernel's posterior
    ``(k, k, in_channels, filters)`` and returns a one-sample estimate of the
    auxiliary upper bound on ``KL(q || p)`` (module docstring). It draws
    ``w = mean + sigma * eps`` itself, so its gradient reaches both ``mean``
    and ``log_sigma2``; the VAE's weights are never trained by it (they are
    not weights of the layer that uses the prior).

    The prior is saved with the layer: its config holds the VAE's config and
    weights, so ``.keras`` files are self-contained.

    Args:
        vae: a trained :class:`KernelVAE` (or its serialized form).
        seed: seed of the weight and latent noise.

    Example:
    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3)  # untrained here: see KernelVAE
    >>> prior = tfpriors.priors.DeepWeightPrior(vae, seed=0)
    >>> conv = tfpriors.layers.VariationalConv2D(32, 3, prior=prior, padding="same")
    >>> conv(np.zeros((2, 8, 8, 1), "float32")).shape
    TensorShape([2, 8, 8, 32])
    >>> kl = prior.kl(conv.kernel, conv.log_sigma2)  # a one-sample bound over 32 slices
    >>> kl.shape, bool(np.isfinite(kl))
    (TensorShape([]), True)
    """

    def __init__(self, vae, seed=None):
        if isinstance(vae, dict):
            vae = vae_from_config(vae)
        self.vae = check_vae(vae)
        self.kernel_size = vae.kernel_size
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def check_kernel_shape(self, shape, layer=None):
        """Raises a ValueError unless ``shape`` is a square conv kernel of the VAE's size.

        Args:
            shape: a kernel shape ``(kh, kw, in_channels, filters)``.
            layer: the layer asking, named in the error message (optional).

        Returns:
            ``shape`` as a tuple.
        """
        where = (
            "DeepWeightPrior"
            if layer is None
            else (f"layer '{layer.name}' ({type(layer).__name__}) with prior=DeepWeightPrior")
        )
        return check_kernel_shape(shape, self.kernel_size, where)

    def kl(self, mean, log_sigma2):
        self.check_kernel_shape(mean.shape)
        mean = ops.cast(mean, "float32")
        log_sigma2 = ops.cast(log_sigma2, "float32")
        noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        weights = mean + ops.exp(0.5 * log_sigma2) * noise
        entropy = 0.5 * ops.sum(_LOG_2PI_E + log_sigma2)
        bound = self.vae.negative_elbo(
            kernel_slices(weights), sample=True, seed=self.seed_generator
        )
        return ops.sum(bound) - entropy

    def get_config(self):
        return {"vae": vae_to_config(self.vae), "seed": self.seed}
