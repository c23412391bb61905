"""Priors over weights: one ``Prior.kl`` interface for every variational layer.

:class:`Normal`, :class:`LogUniform` (Sparse VD), :class:`LearnedGaussian`
(empirical Bayes) and :class:`DeepWeightPrior` (a :class:`KernelVAE` trained on
the kernels that :func:`collect_kernels` gathers) plug into the ``prior``
argument of ``tfpriors.layers.VariationalDense`` / ``VariationalConv2D``.
:class:`TruncatedLogNormal` is the per-unit noise of Structured Bayesian
Pruning, with its KL from the truncated log-uniform prior.
"""

from tfpriors.priors.base import Prior
from tfpriors.priors.dwp import DeepWeightPrior
from tfpriors.priors.kernel_vae import KernelVAE
from tfpriors.priors.kernels import collect_kernels, plot_kernels
from tfpriors.priors.learned_gaussian import LearnedGaussian
from tfpriors.priors.log_uniform import LogUniform, log_alpha
from tfpriors.priors.normal import Normal
from tfpriors.priors.truncated_log_uniform import TruncatedLogNormal

__all__ = [
    "Prior",
    "LogUniform",
    "Normal",
    "log_alpha",
    "LearnedGaussian",
    "KernelVAE",
    "DeepWeightPrior",
    "collect_kernels",
    "plot_kernels",
    "TruncatedLogNormal",
]
