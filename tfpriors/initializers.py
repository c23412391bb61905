"""Keras initializers that carry prior knowledge into a network's starting point.

:class:`DWPInitializer` starts convolutions from kernels drawn from a
:class:`~tfpriors.priors.KernelVAE` trained on other networks' kernels.
"""

import keras
from keras import ops

from tfpriors import _validation
from tfpriors.priors.kernel_vae import check_kernel_shape, check_vae, vae_from_config, vae_to_config


@keras.saving.register_keras_serializable(package="tfpriors")
class DWPInitializer(keras.initializers.Initializer):
    """Draws conv kernels from a :class:`~tfpriors.priors.KernelVAE`: decoder means at z ~ N(0, I).

    Every ``(input channel, filter)`` slice of a ``(k, k, in, out)`` kernel
    gets its own ``z``, so a new layer starts from kernels that look like
    those of the trained source networks (the Deep Weight Prior
    initialization). Each call draws new kernels; its config holds the VAE
    (config and weights), so models using it save and load like any other.

    Args:
        vae: a trained :class:`KernelVAE` (or its serialized form).
        seed: an int seed (reproducible draws) or ``None``.
        noise: also add the decoder's Gaussian noise, drawing ``w ~ p(w|z)``
            instead of its mean. Decoder means have less spread than real
            kernels whenever the latent code explains little of them; the
            noise restores the source kernels' full spread. Default ``False``
            (the Deep Weight Prior paper's initialization).

    Example:
    >>> vae = tfpriors.priors.KernelVAE(kernel_size=3)  # untrained here: see KernelVAE
    >>> init = tfpriors.initializers.DWPInitializer(vae, seed=0)
    >>> conv = keras.layers.Conv2D(32, 3, kernel_initializer=init)
    >>> conv(np.zeros((1, 8, 8, 4), "float32")).shape
    TensorShape([1, 6, 6, 32])
    >>> conv.kernel.shape  # 4 * 32 slices, each decoded from its own z
    TensorShape([3, 3, 4, 32])
    >>> sorted(init.get_config())  # the VAE travels in the config
    ['noise', 'seed', 'vae']
    """

    def __init__(self, vae, seed=None, noise=False):
        if isinstance(vae, dict):
            vae = vae_from_config(vae)
        self.vae = check_vae(vae)
        seed = _validation.seed(seed)
        noise = _validation.boolean(noise, "noise")
        self.seed = seed
        self.noise = noise
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __call__(self, shape, dtype=None):
        k = self.vae.kernel_size
        shape = check_kernel_shape(shape, k, "DWPInitializer")
        count = shape[2] * shape[3]
        z = keras.random.normal((count, self.vae.latent_dim), seed=self.seed_generator)
        slices, log_variance = self.vae.decode(z)  # (in * out, k, k) each
        if self.noise:
            slices = slices + ops.exp(0.5 * log_variance) * keras.random.normal(
                ops.shape(slices), seed=self.seed_generator
            )
        kernel = ops.transpose(ops.reshape(slices, (shape[2], shape[3], k, k)), (2, 3, 0, 1))
        return ops.cast(kernel, dtype or keras.config.floatx())

    def get_config(self):
        return {"vae": vae_to_config(self.vae), "seed": self.seed, "noise": self.noise}
