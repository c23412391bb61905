import keras
import numpy as np
import pytest

import tfpriors


def edge_kernels(count, seed=0):
    """Synthetic 3x3 'source' kernels: scaled oriented edges and blobs plus a little noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(3) - 1.0, np.arange(3) - 1.0, indexing="ij"))
    angles = rng.uniform(0, 2 * np.pi, count)
    edges = np.cos(angles)[:, None, None] * grid[0] + np.sin(angles)[:, None, None] * grid[1]
    blob = np.exp(-(grid**2).sum(0))[None]
    kind = rng.random(count)[:, None, None] < 0.7
    kernels = np.where(kind, edges, blob) * rng.uniform(0.1, 0.3, (count, 1, 1))
    return (kernels + rng.normal(0, 0.01, kernels.shape)).astype("float32")


@pytest.fixture(scope="session")
def source_kernels():
    return edge_kernels(3000)


@pytest.fixture(scope="session")
def trained_vae(source_kernels):
    keras.utils.set_random_seed(0)
    vae = tfpriors.priors.KernelVAE(kernel_size=3, latent_dim=2, hidden_units=32, seed=0)
    vae.compile(keras.optimizers.Adam(3e-3))
    history = vae.fit(source_kernels, epochs=20, batch_size=300, verbose=0)
    vae.losses_during_fit = history.history["loss"]
    return vae
